"""The ``bourse`` command line, run in-process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane import Node
from controlplane.cli import build_parser, main, node_config
from tests.conftest import SETUP
from tests.nodeutil import small_config


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


# --- bench pipeline / replay ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["none", "fsync"])
def test_bench_pipeline_prints_one_json_line(
    policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "pipeline", "--policy", policy, "--ops", "5000", "--window", "64"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    report = json.loads(line)
    assert report["policy"] == policy
    assert report["window"] == 64
    for key in ("ops_per_sec", "p50_ns", "p99_ns", "p999_ns"):
        assert report[key] > 0


def test_bench_replay_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "replay", "--ops", "5000", "--fsync-samples", "5"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    report = json.loads(line)
    assert report["deterministic"] is True
    for key in ("ops_per_sec", "p50_ns", "p99_ns", "p999_ns"):
        assert report[key] > 0


@pytest.mark.parametrize("flags", [[], ["--gateway-embedded", "--no-preallocate"]])
def test_bench_gateway_prints_one_json_line(
    capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    argv = ["bench", "gateway", "--rate", "2000", "--duration", "1", "--sessions", "2"]
    assert main([*argv, "--warmup", "0.2", *flags]) == 0
    [line] = capsys.readouterr().out.splitlines()
    report = json.loads(line)
    for key in (
        "offered_rate",
        "achieved_rate",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "rejects",
        "sent",
        "answered",
        "unanswered",
        "sessions",
        "policy",
        "duration_s",
        "trades",
        "gateway",
        "node",
    ):
        assert key in report, key
    assert report["policy"] == "fsync"
    assert report["preallocate_segments"] is (not flags)
    assert report["sessions"] == 2
    assert report["offered_rate"] == 2000
    assert report["sent"] > 0
    assert report["answered"] > 0
    assert report["unanswered"] == 0
    assert 0 < report["p50_us"] <= report["p99_us"] <= report["max_us"]


# --- node -------------------------------------------------------------------------------------

SMALL = ["--order-capacity", "4096", "--levels-per-side", "256"]


def _node(data_dir: Path, *flags: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "controlplane", "node", "run", "--data-dir", str(data_dir)]
    return subprocess.Popen(
        [*argv, *SMALL, *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_node_run_stdio_acks_each_line_and_stops_at_eof(tmp_path: Path) -> None:
    lines = [
        json.dumps({**SETUP[0], "ref": "first"}),
        "not json",
        json.dumps({"type": "deposit", "account": 1}),
        json.dumps(SETUP[1]),
        "",
    ]
    proc = _node(tmp_path, "--stdio", "--durability", "write", "--wait", "yield")
    out, err = proc.communicate("\n".join(lines) + "\n", timeout=60)
    assert proc.returncode == 0, err
    ready, first, bad_json, bad_command, second, stopped = map(json.loads, out.splitlines())
    assert ready["event"] == "ready"
    assert ready["recovery"]["next_seq"] == 1
    assert first["seq"] == 1
    assert first["ref"] == "first"
    assert first["events"][0]["type"] == "asset_listed"
    assert "invalid JSON" in bad_json["error"]
    assert "asset" in bad_command["error"]
    assert second["seq"] == 2
    assert second["ref"] is None
    assert stopped["event"] == "stopped"
    assert stopped["stats"]["durable_seq"] == 2

    assert main(["node", "replay", "--data-dir", str(tmp_path), *SMALL]) == 0


def test_node_run_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    proc = _node(tmp_path)
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    assert ready["event"] == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out)["event"] == "stopped"
    assert list(tmp_path.glob("snapshot-*.snap")), "stopping takes a final snapshot"


def test_node_replay_prints_the_clean_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = small_config(tmp_path)
    with Node(config) as node:
        node.submit_many(SETUP)
        state_hash = node.state_hash()
    assert main(["node", "replay", "--data-dir", str(tmp_path), *SMALL]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["state_hash"] == state_hash
    assert report["next_seq"] == len(SETUP) + 1
    assert report["invariants_ok"] is True


def test_node_config_file_and_flags(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text(
        'data_dir = "from-file"\n'
        'durability = "write"\n'
        "segment_bytes = 1024\n"
        "[cores]\n"
        "sequencer = 0\n"
        "[wait.spin_then_park]\n"
        "spins = 5\n"
        "park_timeout_us = 7\n"
    )
    args = build_parser().parse_args(
        ["node", "run", "--config", str(toml), "--durability", "fsync", "--engine-core", "1"]
    )
    assert node_config(args) == {
        "data_dir": "from-file",
        "durability": "fsync",
        "segment_bytes": 1024,
        "cores": {"sequencer": 0, "engine": 1},
        "wait": {"spin_then_park": {"spins": 5, "park_timeout_us": 7}},
    }
    as_json = tmp_path / "node.json"
    as_json.write_text(json.dumps({"snapshot_every_secs": 0}))
    args = build_parser().parse_args(
        ["node", "run", "--config", str(as_json), "--data-dir", "d", "--wait", "busy-spin"]
    )
    assert node_config(args) == {"snapshot_every_secs": 0, "data_dir": "d", "wait": "busy_spin"}
    args = build_parser().parse_args(["node", "run", "--data-dir", "d", "--wait", "spin-then-park"])
    assert node_config(args)["wait"] == {"spin_then_park": {"spins": 1000, "park_timeout_us": 1000}}


def test_node_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data_dir": str(tmp_path), "snapshots": 3}))
    assert main(["node", "run", "--config", str(bad)]) == 1
    assert "unknown field `snapshots`" in capsys.readouterr().err
    assert main(["node", "run"]) == 1
    assert "--data-dir" in capsys.readouterr().err
    assert main(["node", "run", "--config", str(tmp_path / "missing.toml")]) == 1
    assert "missing.toml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["node", "run", "--data-dir", "d", "--wait", "sometimes"])
    assert "unknown wait strategy" in capsys.readouterr().err
