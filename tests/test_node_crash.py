"""Crash safety of the durable node, and the documented outcomes of journal and snapshot damage.

The crash test runs ``bourse node run --stdio`` as a child process (durability ``fsync``,
1 KiB segments, a snapshot every 40 commands, 3 kept), drives a seeded random stream of
deposits, limit orders, cancels, amends and withdrawals at it, and SIGKILLs it — at random
points, right after a snapshot falls due, as a segment is about to roll, and in the middle of
a pipelined burst — then restarts it, many times. After every restart it checks:

(a) every acknowledged command is in the journal under its acknowledged sequence number, and
    the journal holds exactly a prefix of what was sent (in order: nothing invented, nothing
    reordered; commands that were durable but not yet acknowledged may be there);
(b) the recovered state hash (the ``ready`` line) equals ``replay_journal`` in this process (a
    fresh process relative to the node) and an independent replay, into a fresh ``Engine``, of
    every command ``read_journal`` has shown since the start;
(c) money is conserved: ``check_invariants`` holds on that replay;
(d) the sequence continues without gaps: journal sequence numbers are consecutive and end at
    ``next_seq - 1``, and the first acknowledgement after the restart is ``next_seq``.

Compaction deletes segments older than the oldest kept snapshot, so ``read_journal`` starts
later and later; the test keeps every record it has read (they never change) and checks the
archive is 1..N with no hole. That works because a run sends fewer commands than two snapshot
intervals, so a record is always read at the next restart before compaction can remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from controlplane import (
    Command,
    JournalRecord,
    Node,
    NodeConfig,
    RecoveryError,
    read_journal,
    replay_journal,
)
from tests.nodeutil import (
    LEVELS_PER_SIDE,
    ORDER_CAPACITY,
    Flow,
    flip_byte,
    fresh_engine,
    replay,
    same_command,
    segments,
    small_config,
    snapshots,
)

SEGMENT_BYTES = 1024  # ~15 records: several rolls in every run
SNAPSHOT_EVERY = 40
KEEP_SNAPSHOTS = 3
ITERATIONS = 40
MAX_RUN = 50  # commands sent per run at most: < 2 * SNAPSHOT_EVERY, see the module docs
ACK_TIMEOUT = 20.0


# --- the child process ----------------------------------------------------------------------


class Child:
    """``bourse node run --stdio`` with a thread reading its stdout lines into a queue."""

    def __init__(self, data_dir: Path, config_file: Path, log: Path) -> None:
        self.log = log
        argv = [
            sys.executable,
            "-m",
            "controlplane",
            "node",
            "run",
            "--stdio",
            "--data-dir",
            str(data_dir),
            "--config",
            str(config_file),
            "--durability",
            "fsync",
            "--segment-bytes",
            str(SEGMENT_BYTES),
            "--snapshot-every",
            str(SNAPSHOT_EVERY),
            "--keep-snapshots",
            str(KEEP_SNAPSHOTS),
            "--wait",
            "spin-then-park:100:200",
            "--order-capacity",
            str(ORDER_CAPACITY),
            "--levels-per-side",
            str(LEVELS_PER_SIDE),
        ]
        with log.open("a") as stderr:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self, timeout: float = ACK_TIMEOUT) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from the node within {timeout} s") from None
        if line is None:
            status = self.proc.wait()
            raise AssertionError(f"the node exited (status {status}): {self.log.read_text()}")
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def send(self, lines: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(lines))
        self.proc.stdin.flush()

    def kill(self) -> list[dict[str, Any]]:
        """SIGKILL; returns the lines it printed that were not read yet."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        rest = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(json.loads(line))
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        return rest

    def finish(self) -> dict[str, Any]:
        """EOF on stdin: the node stops gracefully; returns its ``stopped`` line."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        line = self.next_line()
        assert self.proc.wait(timeout=30) == 0
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return line


# --- the model: what was sent, acknowledged and journaled -----------------------------------


@dataclass
class History:
    data_dir: Path
    archive: dict[int, JournalRecord] = field(default_factory=dict)
    acked: dict[int, Command] = field(default_factory=dict)
    durable_seq: int = 0  # N after the last restart
    last_run: list[Command] = field(default_factory=list)
    unacked_durable: int = 0  # commands found journaled but never acknowledged

    def config(self) -> NodeConfig:
        return small_config(
            self.data_dir,
            segment_bytes=SEGMENT_BYTES,
            snapshot_every_commands=SNAPSHOT_EVERY,
            keep_snapshots=KEEP_SNAPSHOTS,
        )

    def line(self, command: Command) -> str:
        """The stdin line for the next command of this run (its ref: its index in the run)."""
        self.last_run.append(command)
        return json.dumps({**command, "ref": len(self.last_run) - 1}) + "\n"

    def record_ack(self, ack: dict[str, Any], next_seq: int) -> None:
        assert "error" not in ack, ack
        # (d) the first acknowledgement after the restart is next_seq, and so on.
        assert ack["seq"] == next_seq + ack["ref"], (ack["seq"], next_seq, ack["ref"])
        self.acked[ack["seq"]] = self.last_run[ack["ref"]]

    def check_restart(self, recovery: dict[str, Any]) -> None:
        """Checks (a)-(d) against the node that just printed its ready line (and is idle)."""
        n = recovery["next_seq"] - 1
        records = read_journal(self.data_dir)
        seqs = [r["seq"] for r in records]
        # (d) consecutive, ending at next_seq - 1.
        if seqs:
            assert seqs == list(range(seqs[0], n + 1)), (seqs[:3], seqs[-3:], n)
        else:
            assert n == 0
        for record in records:
            seen = self.archive.setdefault(record["seq"], record)
            assert seen == record, f"journal record {record['seq']} changed"
        assert sorted(self.archive) == list(range(1, n + 1)), "a record was lost"
        # (a) the journal is a prefix of what was sent, and holds every acknowledged command.
        new = n - self.durable_seq
        assert 0 <= new <= len(self.last_run), (self.durable_seq, n, len(self.last_run))
        for i in range(new):
            assert same_command(self.archive[self.durable_seq + 1 + i]["command"], self.last_run[i])
        for seq, command in self.acked.items():
            assert seq <= n, f"acknowledged seq {seq} is not in the journal (ends at {n})"
            assert same_command(self.archive[seq]["command"], command)
        acked_last_run = sum(1 for seq in self.acked if seq > self.durable_seq)
        self.unacked_durable += new - acked_last_run
        self.durable_seq = n
        # (b) the recovered hash equals a clean replay here and an independent replay.
        clean = replay_journal(self.config())
        assert clean["state_hash"] == recovery["state_hash"]
        assert clean["next_seq"] == n + 1
        assert clean["invariants_ok"], clean["invariant_error"]
        engine = replay([self.archive[s] for s in range(1, n + 1)])
        assert engine.state_hash() == recovery["state_hash"]
        # (c) money is conserved (and every other engine invariant holds).
        engine.check_invariants()


def _newest_segment_used(data_dir: Path) -> int:
    """Bytes of the newest segment up to its last non-zero byte: about where its records end,
    whether or not the segment was zero-filled ahead (preallocated)."""
    segs = segments(data_dir)
    return len(segs[-1].read_bytes().rstrip(b"\0")) if segs else 0


def test_sigkill_at_random_points_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    config_file = tmp_path / "node.json"
    # The config file sets what has no flag; the flags set the rest (and win).
    rng = random.Random(20240611)
    flow = Flow(seed=7)
    history = History(data_dir)
    started = time.monotonic()
    plans: dict[str, int] = {}
    torn = 0
    padded = 0  # restarts that trimmed a preallocated segment's zero padding
    leftovers: dict[str, set[str]] = {"snap.tmp": set(), "journal.tmp": set()}  # mid-write kills
    for iteration in range(ITERATIONS + 1):
        for kind in leftovers:
            leftovers[kind].update(p.name for p in data_dir.glob(f"*.{kind}"))
        # Every other run zero-fills its segments ahead (preallocation), so recovery meets
        # both kinds of segment, and restarts switch between them.
        config_file.write_text(
            json.dumps(
                {
                    "snapshot_every_secs": 0,
                    "ring_capacity": 1024,
                    "preallocate_segments": iteration % 2 == 1,
                }
            )
        )
        child = Child(data_dir, config_file, tmp_path / "node.log")
        ready = child.next_line()
        assert ready["event"] == "ready", ready
        recovery = ready["recovery"]
        torn += recovery["torn_tail"] is not None
        padded += recovery["padding_trimmed"] > 0
        history.check_restart(recovery)
        next_seq = recovery["next_seq"]
        history.last_run = []
        if iteration == ITERATIONS:
            # A last, clean run: drive a few commands and stop at EOF.
            for command in flow.take(5):
                child.send([history.line(command)])
                history.record_ack(child.next_line(), next_seq)
            stopped = child.finish()
            assert stopped["event"] == "stopped"
            assert stopped["stats"]["durable_seq"] == next_seq + 4
            break

        plan = ("random", "snapshot", "roll", "burst")[iteration % 4]
        plans[plan] = plans.get(plan, 0) + 1
        if plan == "snapshot":
            # The engine snapshots once `snapshot_every` commands follow the last snapshot.
            due = max(recovery["snapshot_seq"] + SNAPSHOT_EVERY, next_seq)
            kill_at = min(due - next_seq + rng.randint(0, 2), MAX_RUN - 1)
        else:
            kill_at = rng.randrange(MAX_RUN)
        burst = 1
        if plan == "burst":
            burst = rng.randint(5, 30)
            kill_at = rng.randrange(MAX_RUN - burst)
        delay = 0.0 if rng.random() < 0.25 else rng.uniform(0, 0.004)
        if plan == "roll":
            delay = rng.uniform(0.0002, 0.002)  # a roll starts ~0.3-3 ms after the write

        for i in range(MAX_RUN):
            if plan == "roll" and _newest_segment_used(data_dir) >= SEGMENT_BYTES - 150:
                # Two records take the segment past its size: the commit rolls it.
                kill_at, burst = i, 2
            if i == kill_at:
                child.send([history.line(c) for c in flow.take(burst)])
                break
            child.send([history.line(next(flow))])
            history.record_ack(child.next_line(), next_seq)
        if delay:
            time.sleep(delay)
        for ack in child.kill():
            history.record_ack(ack, next_seq)

    elapsed = time.monotonic() - started
    temporary = {kind: len(names) for kind, names in leftovers.items()}
    print(
        f"\ncrash test: {ITERATIONS} SIGKILLs {plans}, {history.durable_seq} commands journaled, "
        f"{len(history.acked)} acknowledged, {history.unacked_durable} durable but unacknowledged "
        f"at a kill, {torn} torn tails, {padded} padded segments trimmed, temporary files left "
        f"by kills {temporary}, "
        f"{elapsed:.1f} s"
    )
    assert history.durable_seq > ITERATIONS * 5
    assert padded > 0, "no restart met a preallocated segment"
    assert len(snapshots(data_dir)) == KEEP_SNAPSHOTS


# --- damage: the documented outcomes ---------------------------------------------------------


# `del node` below drops a node without stopping it: no final snapshot and no compaction —
# a crash, as far as the disk is concerned (every acknowledged command is already durable).


def _build(data_dir: Path, commands: int, **overrides: object) -> tuple[NodeConfig, str]:
    """A node directory with `commands` commands (several segments) and no final snapshot;
    returns its config and state hash."""
    config = small_config(data_dir, **overrides)
    node = Node(config)
    node.submit_many(Flow(seed=3).take(commands), window=1)  # one record per commit
    state_hash = node.state_hash()
    del node
    return config, state_hash


def test_a_flipped_byte_mid_segment_stops_recovery_naming_file_and_offset(
    tmp_path: Path,
) -> None:
    config, _ = _build(tmp_path, 200)
    segs = segments(tmp_path)
    assert len(segs) >= 3
    for victim in (segs[0], segs[-1]):
        size = victim.stat().st_size
        offset = size // 2
        before = victim.read_bytes()
        flip_byte(victim, offset)
        damaged = victim.read_bytes()
        with pytest.raises(RecoveryError) as err:
            Node(config)
        message = str(err.value)
        assert victim.name in message, message
        assert "offset" in message, message
        assert victim.read_bytes() == damaged, "recovery changed a damaged segment"
        with pytest.raises(RecoveryError):
            replay_journal(config)
        victim.write_bytes(before)
    with Node(config) as node:
        assert node.recovery()["next_seq"] == 201


def test_a_truncated_tail_is_cut_off_and_reported(tmp_path: Path) -> None:
    config, _ = _build(tmp_path, 100)
    last = segments(tmp_path)[-1]
    records = read_journal(tmp_path)
    assert records[-1]["seq"] == 100
    size = last.stat().st_size
    with last.open("r+b") as f:
        f.truncate(size - 5)  # the last record loses its last 5 bytes
    # A reader stops quietly before the torn record; the 99 before it are intact.
    assert read_journal(tmp_path)[-1]["seq"] == 99
    with Node(config) as node:
        recovery = node.recovery()
        torn = recovery["torn_tail"]
        assert torn is not None
        assert last.name in torn
        assert "offset" in torn
        assert recovery["next_seq"] == 100
        assert last.stat().st_size < size - 5, "the torn record was cut off"
        expected = replay(read_journal(tmp_path)).state_hash()
        assert recovery["state_hash"] == expected
        assert node.submit({"type": "list_asset", "asset": 77, "decimals": 2})["seq"] == 100


def test_a_missing_middle_segment_stops_recovery(tmp_path: Path) -> None:
    config, _ = _build(tmp_path, 200)
    segs = segments(tmp_path)
    assert len(segs) >= 3
    missing = segs[len(segs) // 2]
    missing.unlink()
    with pytest.raises(RecoveryError) as err:
        Node(config)
    assert "missing" in str(err.value), str(err.value)
    assert segments(tmp_path) == [s for s in segs if s != missing], "recovery changed files"


def test_a_snapshot_with_a_bad_checksum_is_skipped(tmp_path: Path) -> None:
    # One large segment: nothing is compacted, so the journal can always be replayed whole.
    config, state_hash = _build(
        tmp_path,
        100,
        segment_bytes=64 << 20,
        snapshot_every_commands=20,
        keep_snapshots=10,
    )
    snaps = snapshots(tmp_path)
    assert [int(s.stem.split("-")[1]) for s in snaps] == [20, 40, 60, 80, 100]
    flip_byte(snaps[-1], snaps[-1].stat().st_size - 10)  # in the payload
    with Node(config) as node:
        recovery = node.recovery()
        assert recovery["snapshot_seq"] == 80, "fell back to the older snapshot"
        assert [snaps[-1].name in s for s in recovery["skipped_snapshots"]] == [True]
        assert recovery["replayed"] == 20
        assert recovery["state_hash"] == state_hash
    # Every snapshot damaged: recovery replays the journal from seq 1.
    for snap in snapshots(tmp_path):
        flip_byte(snap, snap.stat().st_size - 10)
    with Node(config) as node:
        recovery = node.recovery()
        assert recovery["snapshot_seq"] == 0
        assert len(recovery["skipped_snapshots"]) == len(snapshots(tmp_path))
        assert recovery["replayed"] == 100
        assert recovery["state_hash"] == state_hash


def test_damaged_snapshots_with_a_compacted_journal_stop_recovery(tmp_path: Path) -> None:
    config, _ = _build(tmp_path, 200, snapshot_every_commands=50, keep_snapshots=1)
    assert read_journal(tmp_path)[0]["seq"] > 1, "compaction removed the first segments"
    for snap in snapshots(tmp_path):
        flip_byte(snap, snap.stat().st_size - 10)
    with pytest.raises(RecoveryError) as err:
        Node(config)
    assert "journal starts at" in str(err.value), str(err.value)


# --- determinism -----------------------------------------------------------------------------


def test_replaying_twice_and_snapshot_plus_replay_agree_with_a_full_replay(
    tmp_path: Path,
) -> None:
    config = small_config(tmp_path, segment_bytes=64 << 20, keep_snapshots=100)
    commands = Flow(seed=11).take(300)
    node = Node(config)
    acks = node.submit_many(commands[:150])
    assert node.snapshot() == 150
    acks += node.submit_many(commands[150:])
    live_hash = node.state_hash()
    del node

    first = replay_journal(config)
    second = replay_journal(config)
    assert first["snapshot_seq"] == 150
    assert first["replayed"] == 150
    assert first["state_hash"] == second["state_hash"] == live_hash
    full = replay(read_journal(tmp_path))
    assert full.state_hash() == live_hash
    # The journal holds exactly what was submitted.
    assert all(
        same_command(r["command"], c) for r, c in zip(read_journal(tmp_path), commands, strict=True)
    )

    # Identical event streams: acknowledgements, a fresh engine's, the restarted node's
    # (re-derived from the journal), before and after the snapshot.
    engine = fresh_engine()
    direct = [engine.apply(c) for c in commands]
    assert [a["events"] for a in acks] == direct
    with Node(config) as node:
        assert node.recovery()["snapshot_seq"] == 150
        events = node.events(1, max=1000)
        assert [e["seq"] for e in events] == list(range(1, 301))
        assert [e["events"] for e in events] == direct
        assert [e["timestamp_ns"] for e in events] == [a["timestamp_ns"] for a in acks]

    # Without the snapshot, a full replay from seq 1 gives the same state.
    for snap in snapshots(tmp_path):
        os.remove(snap)
    without = replay_journal(config)
    assert without["snapshot_seq"] == 0
    assert without["state_hash"] == live_hash
