"""Writing files so that a crash never leaves half of one: the one atomic-write helper."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from taskyard._platform import replace

__all__ = ["atomic_write"]


def atomic_write(
    path: str | os.PathLike[str],
    content: str | Iterable[str],
    *,
    mode: int = 0o600,
    folder_mode: int = 0o777,
) -> Path:
    """Write ``content`` (text, or an iterable of text chunks) to ``path`` atomically: a
    temporary file in the same folder, flushed to disk, then renamed over ``path``.
    Readers see the old file or the new one, never a part; on any failure the temporary
    file is removed and ``path`` is unchanged. The file gets ``mode`` (owner-only by
    default: payloads may be private); a missing folder is created with ``folder_mode``
    (less the umask). Returns the path written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=folder_mode)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            if isinstance(content, str):
                handle.write(content)
            else:
                handle.writelines(content)
            handle.flush()
            os.fsync(handle.fileno())
        if mode != 0o600:  # mkstemp creates the file owner-only
            os.chmod(tmp, mode)
        replace(tmp, target)  # retried while Windows says another process holds it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
