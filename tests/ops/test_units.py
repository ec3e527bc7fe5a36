"""The small pieces: durations from the command line, progress on and off a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from taskyard.framework.errors import ConfigurationError
from taskyard.ops.progress import progress_reporter
from taskyard.ops.units import bytes_text, parse_duration, seconds_text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
        ("1.5h", 5400),
        (" 7D ", 604800),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "7 days", "d7", "7x", "-1d", "1d 2"])
def test_bad_durations_are_configuration_errors(text: str) -> None:
    with pytest.raises(ConfigurationError, match="is not a duration"):
        parse_duration(text)


def test_sizes_and_times_for_people() -> None:
    assert (bytes_text(512), bytes_text(2048), bytes_text(3 * 1024**3)) == (
        "512 B",
        "2.0 KiB",
        "3.0 GiB",
    )
    assert (seconds_text(None), seconds_text(0.0042), seconds_text(90), seconds_text(7200)) == (
        "-",
        "4.2 ms",
        "90.0 s",
        "2.0 h",
    )


def test_progress_without_a_terminal_is_plain_lines() -> None:
    out = io.StringIO()
    with progress_reporter("backup", unit="pages", console=Console(file=out)) as progress:
        for done in range(0, 101, 10):
            progress(done, 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "backup ..."
    assert lines[-1] == "backup: 100/100 pages (100%)"
    assert "\x1b" not in out.getvalue()  # no escape codes in CI logs


def test_progress_on_a_terminal_is_a_bar() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with progress_reporter("backup", unit="pages", console=console) as progress:
        progress(50, 100)
        progress(100, 100)
    assert "backup" in out.getvalue() and "100/100" in out.getvalue()
    assert "\x1b" in out.getvalue()
