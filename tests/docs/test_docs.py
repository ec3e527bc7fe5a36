"""The operations documents run: every command they show is executed here.

Each document is played from top to bottom in a scratch folder, like a shell session:

- a ```bash block runs as one script (``set -e``: every command in it must succeed);
- in a ```console block each ``$ `` line is a command (continued after a trailing
  backslash on lines that start with ``> ``), which must exit with status 0; the lines
  under it are the output it must print, where ``...`` stands for anything (counts,
  sizes, times, ids);
- a ```python block runs as a program; one whose first line is a comment naming a
  file (``# merge.py``) is saved under that name instead, for a later command to run.

Exported variables and the working directory carry over from block to block. The
environment starts bare (no ``TASKYARD_*`` variable), with this checkout's ``.venv``
first on the PATH so that ``taskyard`` and ``python`` are the ones under test; a
document that moves a queue to PostgreSQL gets ``POSTGRES_URL``, the DSN (with a
password, which the test server does not check) of a database made for it. Processes
a document starts in the background write their pid to a ``*.pid`` file, and are
stopped at the end if the document did not stop them itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.pg_support import create_database, drop_database, require_postgres

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["migration-guide.md", "runbook.md", "troubleshooting.md"]
ON_POSTGRES = {"migration-guide.md"}
"""The documents that show PostgreSQL: they run with a scratch database."""
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
SAVED_AS = re.compile(r"# ([\w-]+\.py)\s*")


@dataclass
class Step:
    kind: str  # "bash", "console", "python" or "file" (code saved as ``name``)
    line: int
    code: str
    expected: list[str] = field(default_factory=list)
    name: str = ""


def steps_of(path: Path) -> list[Step]:
    """The executable steps of a Markdown file, in order."""
    steps: list[Step] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, kind, start = len(match.group(1)), match.group(2), index + 1
        end = start
        while not lines[end].strip().startswith("```"):
            end += 1
        body = [line[indent:] for line in lines[start:end]]  # fences inside list items
        saved = SAVED_AS.fullmatch(body[0]) if kind == "python" and body else None
        if saved:
            steps.append(Step("file", start + 1, "\n".join(body) + "\n", name=saved[1]))
        elif kind in ("bash", "python"):
            steps.append(Step(kind, start + 1, "\n".join(body) + "\n"))
        elif kind == "console":
            steps += console_steps(body, start + 1)
        index = end + 1
    return steps


def console_steps(body: list[str], first_line: int) -> list[Step]:
    steps: list[Step] = []
    command: list[str] = []
    for offset, line in enumerate(body):
        if line.startswith("$ ") and not command:
            command = [line[2:]]
            steps.append(Step("console", first_line + offset, ""))
        elif command:
            command.append(line.removeprefix("> "))  # the shell's continuation prompt
        elif steps:
            steps[-1].expected.append(line)
        if command and not command[-1].endswith("\\"):
            steps[-1].code = "\n".join(command) + "\n"
            command = []
    return steps


def pattern(line: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in line.rstrip().split("...")]
    return re.compile(".*".join(parts))


class Session:
    """A shell session that survives between steps: exported variables and the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state = folder / ".doc-state"
        self.state.mkdir()
        self.steps = 0
        (self.state / "pwd").write_text(str(folder))
        venv_bin = ROOT / ".venv" / "bin"
        python_bin = Path(sys.executable).parent
        self.env = {
            "PATH": os.pathsep.join([str(venv_bin), str(python_bin), "/usr/bin", "/bin"]),
            "HOME": os.environ.get("HOME", str(folder)),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "COLUMNS": "200",
        }

    def run(self, step: Step) -> subprocess.CompletedProcess[str]:
        state = self.state
        if step.kind == "python":
            body = f"python - <<'TASKYARD_DOC_PYTHON'\n{step.code}TASKYARD_DOC_PYTHON\n"
        elif step.kind == "file":
            body = f"cat > {step.name} <<'TASKYARD_DOC_PYTHON'\n{step.code}TASKYARD_DOC_PYTHON\n"
        else:
            body = step.code
        script = (
            ("set -e\n" if step.kind == "bash" else "")
            + f'[ -f "{state}/env" ] && source "{state}/env"\n'
            + f'cd "$(cat "{state}/pwd")"\n'
            + body
            + f'\n__status=$?\nexport -p > "{state}/env"\npwd > "{state}/pwd"\nexit $__status\n'
        )
        # Output goes to files, not pipes: a process the step leaves in the background
        # inherits them, and must not keep the step from ending.
        self.steps += 1
        out, err = self.state / f"{self.steps}.out", self.state / f"{self.steps}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            done = subprocess.run(
                ["bash", "-c", script],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                text=True,
                timeout=100,
            )
        done.stdout, done.stderr = out.read_text(), err.read_text()
        return done

    def stop_background(self) -> None:
        """Stop what a document started in the background and left running."""
        for pid_file in self.folder.rglob("*.pid"):
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                continue


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    shell = Session(tmp_path)
    try:
        yield shell
    finally:
        shell.stop_background()


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A scratch database for a document that moves a queue to PostgreSQL."""
    if request.node.callspec.params["name"] not in ON_POSTGRES:
        yield None
        return
    require_postgres()
    name, dsn = create_database()
    try:
        yield dsn.replace("://postgres@", "://postgres:doc-secret@", 1)
    finally:
        drop_database(name)


@pytest.mark.parametrize("name", DOCS)
def test_every_command_of_the_document_runs(
    name: str, session: Session, postgres_url: str | None
) -> None:
    if postgres_url is not None:
        session.env["POSTGRES_URL"] = postgres_url
    steps = steps_of(ROOT / "docs" / name)
    assert steps, f"docs/{name} shows no command"
    for step in steps:
        done = session.run(step)
        where = f"docs/{name}, line {step.line}:\n{textwrap.indent(step.code, '    ')}"
        assert "doc-secret" not in done.stdout + done.stderr, f"{where}printed the password"
        assert done.returncode == 0, f"{where}exit {done.returncode}\n{done.stdout}{done.stderr}"
        printed = [line.rstrip() for line in (done.stdout + done.stderr).splitlines()]
        for expected in step.expected:
            if expected.strip():
                assert any(pattern(expected).fullmatch(line) for line in printed), (
                    f"{where}expected a line like {expected!r}; it printed:\n" + "\n".join(printed)
                )


@pytest.mark.parametrize("title", ["Periodic tasks"])
def test_every_block_of_a_readme_section_runs(title: str, session: Session, tmp_path: Path) -> None:
    """README sections whose code is played like the documents above."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    section = tmp_path / "section.md"
    section.write_text(text[start : end if end != -1 else None], encoding="utf-8")
    steps = steps_of(section)
    assert len(steps) >= 3, f"README section {title!r} shows no command"
    for step in steps:
        done = session.run(step)
        where = f"README {title!r}:\n{textwrap.indent(step.code, '    ')}"
        assert done.returncode == 0, f"{where}exit {done.returncode}\n{done.stdout}{done.stderr}"
        printed = [line.rstrip() for line in (done.stdout + done.stderr).splitlines()]
        for expected in step.expected:
            if expected.strip():
                assert any(pattern(expected).fullmatch(line) for line in printed), (
                    f"{where}expected a line like {expected!r}; it printed:\n" + "\n".join(printed)
                )


def test_the_parser_finds_commands_outputs_and_scripts(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n```console\n$ echo one \\\n  two\none two\n$ true\n```\n"
        "```bash\nexport A=1\n```\n```toml\n[x]\n```\n```python\nprint(1)\n```\n"
        "1. a step\n\n   ```console\n   $ pwd\n   /somewhere\n   ```\n"
    )
    steps = steps_of(doc)
    assert [(s.kind, s.line) for s in steps] == [
        ("console", 3),
        ("console", 6),
        ("bash", 9),
        ("python", 15),
        ("console", 20),
    ]
    assert steps[0].code == "echo one \\\n  two\n" and steps[0].expected == ["one two"]
    assert (steps[4].code, steps[4].expected) == ("pwd\n", ["/somewhere"])
    saved = steps_of(_write(tmp_path / "saved.md", "```python\n# job.py\nprint(2)\n```\n"))
    assert [(s.kind, s.name, s.code) for s in saved] == [("file", "job.py", "# job.py\nprint(2)\n")]
    assert pattern("  ok ... bytes").fullmatch("  ok 1,024 bytes")
    assert not pattern("result: ok").fullmatch("result: FAILED")


README_SETUP = {
    # the first block: `scripts/demo.sh` bootstraps .venv (done: we run inside it), then
    # execs `taskyard demo`; `scripts/test.sh` is the command running this very test
    "bash scripts/demo.sh ": "taskyard demo --tasks 300 ",
    "bash scripts/test.sh ": ": ",
    # the example application lives in this checkout
    "source .venv/bin/activate": f"source '{ROOT}/.venv/bin/activate'",
    "cd examples/app": f"cd '{ROOT}/examples/app'",
}


def test_every_code_block_of_the_readme_runs(session: Session) -> None:
    """The README's blocks run as printed, in a scratch folder, each from that folder
    (the paths into this checkout are the only change, see README_SETUP)."""
    steps = steps_of(ROOT / "README.md")
    assert [step.kind for step in steps].count("python") >= 3
    # the one block that needs a PostgreSQL server of its own (db.internal), not run here;
    # the postgres backend's tests cover what it does
    not_run = [step for step in steps if "@db.internal:" in step.code]
    assert len(not_run) <= 1
    for step in steps:
        if step in not_run:
            continue
        for printed, here in README_SETUP.items():
            step.code = step.code.replace(printed, here)
        (session.state / "pwd").write_text(str(session.folder))
        done = session.run(step)
        where = f"README.md, line {step.line}:\n{textwrap.indent(step.code, '    ')}"
        assert done.returncode == 0, f"{where}exit {done.returncode}\n{done.stdout}{done.stderr}"
        if "build_report" in step.code:
            assert "reports completed" in done.stdout, done.stdout + done.stderr
        if "resize_image" in step.code and step.kind == "python":
            assert "completed {'thumbnail': 'a.thumb.jpg'}" in done.stdout


def test_the_troubleshooting_index_names_every_error_class() -> None:
    import taskyard.framework.errors as errors

    text = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    index = text.split("## An error by its name", 1)[1].split("\n## ", 1)[0]
    classes = [
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.TaskyardError)
    ]
    assert len(classes) > 15
    missing = [name for name in classes if f"| `{name}` |" not in index]
    assert not missing, f"docs/troubleshooting.md has no entry for {missing}"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
