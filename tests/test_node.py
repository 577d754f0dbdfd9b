"""The durable node through the bindings: ``Node``, ``replay_journal``, ``read_journal``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane import (
    CommandError,
    EngineError,
    EventsGone,
    Node,
    NodeBusy,
    NodeError,
    NodeStopped,
    RecoveryError,
    read_journal,
    replay_journal,
)
from controlplane.engine_types import WaitStrategy
from tests.conftest import ALICE, BOB, BTC, MARKET, SETUP, limit
from tests.nodeutil import Flow, fresh_engine, same_command, small_config

PRICE = 3_000_000


def test_the_exception_tree() -> None:
    assert issubclass(NodeError, EngineError)
    for cls in (RecoveryError, NodeBusy, NodeStopped, EventsGone):
        assert issubclass(cls, NodeError)


def test_submit_acknowledges_in_sequence_and_matches_a_plain_engine(tmp_path: Path) -> None:
    engine = fresh_engine()
    commands = [*SETUP, limit(BOB, "sell", PRICE, 5000, 1), limit(ALICE, "buy", PRICE, 2000, 2)]
    with Node(small_config(tmp_path)) as node:
        assert node.recovery()["next_seq"] == 1
        for seq, command in enumerate(commands, start=1):
            ack = node.submit(command)
            assert ack["seq"] == seq
            assert ack["timestamp_ns"] > 0
            assert ack["events"] == engine.apply(command)
        assert node.state_hash() == engine.state_hash()
        assert node.balance(ALICE, BTC) == engine.balance(ALICE, BTC)
        assert node.balance(99, BTC) is None
        assert node.depth(MARKET, "sell", 5) == engine.depth(MARKET, "sell", 5) != []
        with pytest.raises(ValueError, match="side"):
            node.depth(MARKET, "up", 5)  # type: ignore[arg-type]
        stats = node.stats()
        assert stats["durable_seq"] == stats["applied_seq"] == len(commands)
        events = node.events(1)
        assert [e["seq"] for e in events] == list(range(1, len(commands) + 1))
        # Every entry says who submitted it (journaled, so it survives restarts).
        assert all(e["origin"]["source"] == 0 for e in events)
        assert len({e["origin"]["reference"] for e in events}) == len(commands)
        assert node.events(len(commands) + 1) == []
        assert node.snapshot() == len(commands)


def test_stop_is_idempotent_and_then_everything_raises_node_stopped(tmp_path: Path) -> None:
    node = Node(small_config(tmp_path))
    node.submit(SETUP[0])
    first = node.stop()
    assert first["durable_seq"] == 1
    assert node.stop() == first
    with node:  # entering a stopped node is allowed; leaving it stops nothing new
        pass
    for call in (
        node.state_hash,
        node.stats,
        node.snapshot,
        lambda: node.submit(SETUP[1]),
        lambda: node.submit_many([SETUP[1]]),
        lambda: node.events(1),
        lambda: node.balance(1, 1),
    ):
        with pytest.raises(NodeStopped):
            call()
    assert node.recovery()["next_seq"] == 1


def test_a_restart_recovers_state_and_continues_the_sequence(tmp_path: Path) -> None:
    commands = Flow(seed=5).take(120)
    config = small_config(tmp_path, snapshot_every_commands=50)
    with Node(config) as node:
        acks = node.submit_many(commands, window=16)
        assert [a["seq"] for a in acks] == list(range(1, 121))
        state_hash = node.state_hash()
    with Node(config) as node:
        recovery = node.recovery()
        assert recovery["next_seq"] == 121
        assert recovery["snapshot_seq"] == 120  # the final snapshot taken by stop()
        assert recovery["state_hash"] == state_hash
        assert node.submit(SETUP[0])["seq"] == 121
    clean = replay_journal(config)
    assert clean["next_seq"] == 122
    assert clean["invariants_ok"]
    assert clean["invariant_error"] is None


def test_submit_many_checks_every_command_before_submitting_any(tmp_path: Path) -> None:
    with Node(small_config(tmp_path)) as node:
        bad: list[Any] = [SETUP[0], {"type": "deposit", "account": 1, "asset": 1}]
        with pytest.raises(CommandError, match="amount"):
            node.submit_many(bad)
        assert node.stats()["durable_seq"] == 0
        with pytest.raises(ValueError, match="window"):
            node.submit_many([SETUP[0]], window=0)
        with pytest.raises(ValueError, match="timeout"):
            node.submit(SETUP[0], timeout=-1.0)
        assert node.submit_many([]) == []


def test_submits_from_many_threads_get_distinct_consecutive_seqs(tmp_path: Path) -> None:
    seqs: list[int] = []
    lock = threading.Lock()
    with Node(small_config(tmp_path, durability="write")) as node:

        def worker(first_asset: int) -> None:
            for asset in range(first_asset, first_asset + 25):
                ack = node.submit({"type": "list_asset", "asset": asset, "decimals": 2})
                with lock:
                    seqs.append(ack["seq"])

        threads = [threading.Thread(target=worker, args=(100 * t,)) for t in range(1, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(seqs) == list(range(1, 101))


def test_events_wait_for_new_commands(tmp_path: Path) -> None:
    with Node(small_config(tmp_path)) as node:
        started = time.monotonic()
        assert node.events(1, timeout=0.05) == []
        assert time.monotonic() - started >= 0.04
        timer = threading.Timer(0.05, lambda: node.submit(SETUP[0]))
        timer.start()
        events = node.events(1, timeout=10.0)
        timer.join()
        assert [e["seq"] for e in events] == [1]
        with pytest.raises(ValueError, match="timeout"):
            node.events(1, timeout=float("nan"))


def test_old_events_come_from_the_journal_or_are_gone(tmp_path: Path) -> None:
    commands = Flow(seed=9).take(200)
    engine = fresh_engine()
    expected = [engine.apply(c) for c in commands]
    config = small_config(tmp_path, event_window=10, snapshot_every_commands=50, keep_snapshots=2)
    with Node(config) as node:
        node.submit_many(commands, window=1)
        deadline = time.monotonic() + 10
        while node.stats()["snapshots"] < 4 and time.monotonic() < deadline:
            time.sleep(0.01)  # snapshots (and compaction) are written in the background
        # Beyond the 10 kept in memory: re-derived from a snapshot and the journal.
        old = node.events(160, max=5)
        assert [e["seq"] for e in old] == [160, 161, 162, 163, 164]
        assert [e["events"] for e in old] == expected[159:164]
        # Compacted away: gone, and said so.
        first_kept = read_journal(tmp_path)[0]["seq"]
        assert first_kept > 1
        with pytest.raises(EventsGone, match="no longer available"):
            node.events(1)
        with pytest.raises(EventsGone):
            read_journal(tmp_path, 1)
        records = read_journal(tmp_path, first_kept + 3)
        assert records[0]["seq"] == first_kept + 3
        assert same_command(records[-1]["command"], commands[-1])


def test_bad_configs_are_node_errors(tmp_path: Path) -> None:
    with pytest.raises(NodeError, match="unknown field `bogus`"):
        Node({**small_config(tmp_path), "bogus": 1})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(NodeError, match="durability"):
        Node({**small_config(tmp_path), "durability": "sometimes"})  # type: ignore[typeddict-item]
    with pytest.raises(NodeError, match="must be a dict"):
        Node([])  # type: ignore[arg-type]
    with pytest.raises(NodeError, match="unknown field"):
        Node({**small_config(tmp_path), "cores": {"gpu": 1}})  # type: ignore[typeddict-unknown-key]


def test_wait_strategies_and_path_like_data_dirs(tmp_path: Path) -> None:
    waits: list[WaitStrategy] = [
        "yield",
        "busy_spin",
        {"spin_then_park": {"spins": 10, "park_timeout_us": 50}},
    ]
    for i, wait in enumerate(waits):
        config = small_config(tmp_path, wait=wait, durability="none")
        config["data_dir"] = tmp_path / str(i)  # type: ignore[typeddict-item]
        with Node(config) as node:
            assert node.submit(SETUP[0])["seq"] == 1
        assert read_journal(tmp_path / str(i))[0]["command"] == SETUP[0]
    assert read_journal(tmp_path / "missing") == []


def test_stop_does_not_wait_for_a_reader_blocked_in_events(tmp_path: Path) -> None:
    node = Node(small_config(tmp_path))
    waiting = threading.Thread(target=lambda: node.events(10**6, timeout=8.0))
    waiting.start()
    time.sleep(0.1)
    started = time.monotonic()
    node.stop()
    assert time.monotonic() - started < 3.0
    waiting.join(timeout=5.0)
    assert not waiting.is_alive()


def test_markets_and_assets_are_read_from_the_running_engine(tmp_path: Path) -> None:
    with Node(small_config(tmp_path / "node")) as node:
        assert node.markets() == []
        for command in SETUP:
            node.submit(command)
        engine = fresh_engine()
        for command in SETUP:
            engine.apply(command)
        assert node.markets() == [engine.market(MARKET)]
        assert node.assets() == [(1, 8), (2, 8)]
