"""A bad filter, an unreachable database or an unwritable output: one line, non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import main
from tests.exporter.factory import chat_call, store_calls

REPO = Path(__file__).resolve().parents[2]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gateway: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--since", "7x"], 2, "not a time"),
        (["--tag", "team"], 2, "not a tag filter"),
        (["--min-feedback", "3"], 2, "between -1 and 1"),
        (["--since", "1d", "--until", "2d"], 2, "before --until"),
        (["--near-dup-threshold", "2"], 2, "threshold"),
    ],
)
def test_bad_filters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, says: str
) -> None:
    url = store_calls(tmp_path / "c.db", [chat_call("hi", "hello")])
    assert main(["export", "--database-url", url, "--out", str(tmp_path / "o"), *args]) == code
    assert says in one_line_error(capsys)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://nobody@127.0.0.1:1/capture",
        "sqlite+aiosqlite:///{tmp}/missing.db",
        "notadriver://x",
    ],
)
def test_unreachable_database(tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str) -> None:
    url = url.format(tmp=tmp_path)
    assert main(["export", "--database-url", url, "--dry-run"]) == 1
    one_line_error(capsys)
    assert not (tmp_path / "missing.db").exists()


def test_database_without_capture_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    assert (
        main(["export", "--database-url", f"sqlite+aiosqlite:///{tmp_path}/empty.db", "--dry-run"])
        == 1
    )
    assert "gateway db upgrade" in one_line_error(capsys)


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = store_calls(tmp_path / "c.db", [chat_call("hi", "hello")])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["export", "--database-url", url, "--out", str(blocker / "out")]) == 1
    assert "cannot write" in one_line_error(capsys)


def test_no_traceback_from_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "export",
            "--database-url",
            "postgresql+asyncpg://x@127.0.0.1:1/x",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("gateway: cannot")
