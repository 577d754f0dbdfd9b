"""The ``bourse`` command line, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.cli import main


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unknown_workload_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "engine", "--workload", "nope"])
    assert exit_info.value.code == 2
    assert "exchange-core" in capsys.readouterr().err


def test_bench_engine_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "engine", "--ops", "20000", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert isinstance(json.loads(lines[0]), dict)


def test_replay_missing_file_fails_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.zip"
    assert main(["replay", "lobster", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("bourse: error: ")
    assert "nope.zip" in captured.err


def test_replay_lobster_prints_one_json_line(
    lobster_zip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "lobster", str(lobster_zip), "--max-messages", "2000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert isinstance(json.loads(lines[0]), dict)
