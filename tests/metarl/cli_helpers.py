"""Helpers for tests that run the command line in-process and check its one-line errors."""

from __future__ import annotations

import pytest

from metarl import cli


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``metarl ARGV`` in this process: its exit status and what it wrote to stderr."""
    code = cli.main(argv)
    return code, capsys.readouterr().err


def assert_one_line(err: str, *needles: str) -> None:
    """``err`` is one line without a traceback and contains every needle."""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
