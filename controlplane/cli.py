"""The ``bourse`` command line.

    bourse bench engine [--workload exchange-core|liquibook] [--ops N] [--seed S]
    bourse bench pipeline [--policy fsync|write|none] [--ops N] [--window W] [--seed S]
    bourse bench replay [--ops N] [--seed S] [--fsync-samples N]
    bourse bench gateway --rate R --duration S [--policy fsync|write|none] [--sessions N]
                         [--warmup S] [--seed S] [--max-resting N] [--client-threads N]
                         [--gateway-core N] [--node-core N] [--node-wait STRATEGY]
                         [--client-spin-core N]
                         [--node-pipeline threads|single]
    bourse bench bridge [--orders N] [--concurrency C] [--policy fsync|write|none]
    bourse bench api [--clients C] [--duration S] [--rate R] [--durability fsync|write|none]
                     [--resp-type ACK|RESULT|FULL] [--warmup S]
    bourse bench ws [--clients N] [--duration S] [--trade-rate R] [--quote-interval-ms MS]
                    [--durability fsync|write|none] [--warmup S]
    bourse replay lobster ZIP [ZIP ...] [--max-messages N]
    bourse node run --data-dir D [--config FILE.json|.toml] [--durability fsync|write|none]
                    [--snapshot-every N] [--segment-bytes N] [--keep-snapshots N]
                    [--wait busy-spin|yield|spin-then-park[:SPINS:PARK_US]]
                    [--pipeline threads|single]
                    [--engine-core N] [--sequencer-core N] [--publisher-core N]
                    [--order-capacity N] [--levels-per-side N] [--stdio]
    bourse node replay --data-dir D [--config FILE] [--order-capacity N] [--levels-per-side N]
    bourse serve [--config bourse.toml] [--data-dir D] [--http-host H] [--http-port P]
                 [--gateway-listen HOST:PORT] [--durability fsync|write|none] [--no-demo]
    bourse admin [--url URL] [--token T] [--data-dir D] [--json] COMMAND   (controlplane.admin_cli)

Every command is a pair: a handler ``(args) -> exit status`` and an ``add_*`` function that
registers its parser and sets the handler. Groups (``bench``, ``replay``, ``node``) hold their
commands in a tuple (``BENCH_COMMANDS``, ``REPLAY_COMMANDS``, ``NODE_COMMANDS``); the
top-level commands are ``COMMANDS``. A new command is one more ``add_*`` in the right tuple.

Errors a user can cause (a missing file, an unknown workload) are reported on stderr as
``bourse: error: ...`` with exit status 1; usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeAlias, cast

from controlplane import (
    Command,
    EngineError,
    Node,
    NodeConfig,
    NodeError,
    bench_engine,
    bench_pipeline,
    bench_replay,
    bridge_bench,
    encode_command,
    replay_journal,
    replay_lobster,
)
from controlplane._engine import bench_gateway
from controlplane.admin_cli import add_admin

Handler: TypeAlias = Callable[[argparse.Namespace], int]
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Registrar: TypeAlias = Callable[[SubParsers], None]

WORKLOADS = ("exchange-core", "liquibook")


def _emit(line: str) -> None:
    print(line, flush=True)


def _emit_report(report: object) -> None:
    """A benchmark's report as one compact JSON line."""
    _emit(json.dumps(report, separators=(",", ":")))


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text}")
    return value


def _group(subparsers: SubParsers, name: str, help: str, commands: Sequence[Registrar]) -> None:
    parser = subparsers.add_parser(name, help=help, description=help)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in commands:
        add(sub)


# --- bench ----------------------------------------------------------------------------------


def _bench_engine(args: argparse.Namespace) -> int:
    _emit(bench_engine(args.workload, args.ops, args.seed))
    return 0


def add_bench_engine(subparsers: SubParsers) -> None:
    help = "Benchmark the matching engine core on one thread; prints one JSON line."
    p = subparsers.add_parser("engine", help=help, description=help)
    p.add_argument("--workload", choices=WORKLOADS, default="exchange-core")
    p.add_argument("--ops", type=_positive_int, default=5_000_000, help="commands to apply")
    p.add_argument("--seed", type=int, default=1, help="workload generator seed")
    p.set_defaults(handler=_bench_engine)


POLICIES = ("fsync", "write", "none")


def _bench_pipeline(args: argparse.Namespace) -> int:
    _emit(bench_pipeline(args.policy, args.ops, args.window, args.seed))
    return 0


def add_bench_pipeline(subparsers: SubParsers) -> None:
    help = (
        "Benchmark the durable pipeline (sequencer, journal, engine, publisher) in process: "
        "throughput and submit-to-ack latency; prints one JSON line."
    )
    p = subparsers.add_parser("pipeline", help=help, description=help)
    p.add_argument("--policy", choices=POLICIES, default="fsync", help="durability policy")
    p.add_argument("--ops", type=_positive_int, default=1_000_000, help="commands to submit")
    p.add_argument("--window", type=_positive_int, default=1024, help="commands in flight")
    p.add_argument("--seed", type=int, default=1, help="workload generator seed")
    p.set_defaults(handler=_bench_pipeline)


def _bench_replay(args: argparse.Namespace) -> int:
    _emit(bench_replay(args.ops, args.seed, args.fsync_samples))
    return 0


def add_bench_replay(subparsers: SubParsers) -> None:
    help = (
        "Benchmark recovery: replay a journal of N commands (read, checksum, decode, apply) "
        "and measure this disk's fsync latency; prints one JSON line."
    )
    p = subparsers.add_parser("replay", help=help, description=help)
    p.add_argument("--ops", type=_positive_int, default=2_000_000, help="commands to replay")
    p.add_argument("--seed", type=int, default=1, help="workload generator seed")
    p.add_argument("--fsync-samples", type=_positive_int, default=200, help="write + fsync samples")
    p.set_defaults(handler=_bench_replay)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds ≥ 0, not {text}")
    return value


def _wait_strategy_name(text: str) -> str:
    name, *params = text.strip().lower().replace("_", "-").split(":")
    ok = name in ("busy-spin", "yield") and not params
    ok |= name == "spin-then-park" and len(params) in (0, 2) and all(p.isdigit() for p in params)
    if not ok:
        raise argparse.ArgumentTypeError(
            f"expected busy-spin, yield or spin-then-park[:SPINS:PARK_US], not {text}"
        )
    return text


def _bench_gateway(args: argparse.Namespace) -> int:
    report = bench_gateway(
        args.rate,
        args.duration,
        policy=args.policy,
        sessions=args.sessions,
        warmup=args.warmup,
        seed=args.seed,
        max_resting=args.max_resting,
        client_threads=args.client_threads,
        gateway_core=args.gateway_core,
        node_core=args.node_core,
        node_wait=args.node_wait,
        node_pipeline=args.node_pipeline,
        client_spin_core=args.client_spin_core,
        gateway_embedded=args.gateway_embedded,
        preallocate=args.preallocate,
    )
    _emit_report(report)
    return 0


def add_bench_gateway(subparsers: SubParsers) -> None:
    help = (
        "Benchmark the binary gateway in front of a node, in process: an open-loop load of "
        "N order-entry sessions at a fixed total rate (new orders, cancels, amends, IOCs), "
        "latency from each request's scheduled send time to its response; prints one JSON line."
    )
    p = subparsers.add_parser("gateway", help=help, description=help)
    p.add_argument("--rate", type=_positive_int, required=True, help="requests per second, total")
    p.add_argument("--duration", type=_positive_float, required=True, help="measured seconds")
    p.add_argument("--policy", choices=POLICIES, default="fsync", help="durability policy")
    p.add_argument("--sessions", type=_positive_int, default=8, help="sessions (connections)")
    p.add_argument("--warmup", type=_non_negative_float, default=1.0, help="unmeasured seconds")
    p.add_argument("--seed", type=int, default=1, help="workload generator seed")
    p.add_argument(
        "--max-resting", type=_positive_int, default=256, help="resting orders per session"
    )
    p.add_argument(
        "--client-threads", type=_positive_int, default=1, help="load generator thread pairs"
    )
    p.add_argument(
        "--client-spin-core",
        type=_non_negative_int,
        metavar="N",
        help="one load generator thread, pinned to core N, that never sleeps",
    )
    p.add_argument("--gateway-core", type=_non_negative_int, help="pin the gateway I/O thread")
    p.add_argument(
        "--node-core", type=_non_negative_int, help="pin the node's pipeline threads (one core)"
    )
    p.add_argument(
        "--node-wait",
        type=_wait_strategy_name,
        metavar="STRATEGY",
        help="node wait strategy: busy-spin, yield, spin-then-park[:SPINS:PARK_US]",
    )
    p.add_argument(
        "--node-pipeline",
        choices=("threads", "single"),
        default="threads",
        help="node pipeline mode (default: threads)",
    )
    p.add_argument(
        "--gateway-embedded",
        action="store_true",
        help="run the gateway's I/O on the node's one pipeline thread (implies single)",
    )
    p.add_argument(
        "--no-preallocate",
        dest="preallocate",
        action="store_false",
        help="journal segments grow as written instead of being zero-filled first",
    )
    p.set_defaults(handler=_bench_gateway)


def _bench_bridge(args: argparse.Namespace) -> int:
    report = bridge_bench.run(args.orders, args.concurrency, args.policy)
    _emit_report(report)
    return 0


def add_bench_bridge(subparsers: SubParsers) -> None:
    help = (
        "Benchmark the control plane's command bridge: a node in process, N limit orders "
        "submitted by C concurrent asyncio tasks through EngineBridge.submit; prints one JSON "
        "line (orders/s, p50/p99 µs per submit)."
    )
    p = subparsers.add_parser("bridge", help=help, description=help)
    p.add_argument("--orders", type=_positive_int, default=20_000, help="orders to submit")
    p.add_argument("--concurrency", type=_positive_int, default=64, help="concurrent submitters")
    p.add_argument("--policy", choices=POLICIES, default="fsync", help="durability policy")
    p.set_defaults(handler=_bench_bridge)


def _bench_api(args: argparse.Namespace) -> int:
    from controlplane import bench_api

    report = bench_api.run_api(
        args.clients, args.duration, args.rate, args.durability, args.resp_type, args.warmup
    )
    _emit_report(report)
    return 0


def add_bench_api(subparsers: SubParsers) -> None:
    help = (
        "Benchmark signed REST order entry: `bourse serve` as a subprocess, C funded users, "
        "C keep-alive clients sending POST /api/v3/order + DELETE pairs, closed loop or open "
        "loop at --rate orders/s; prints one JSON line (orders/s, latency percentiles in µs)."
    )
    p = subparsers.add_parser("api", help=help, description=help)
    p.add_argument("--clients", type=_positive_int, default=8, help="concurrent clients")
    p.add_argument("--duration", type=_positive_float, default=10.0, help="measured seconds")
    p.add_argument("--rate", type=_positive_float, help="orders/s in total (open loop)")
    p.add_argument("--durability", choices=POLICIES, default="fsync", help="node.durability")
    p.add_argument(
        "--resp-type", choices=("ACK", "RESULT", "FULL"), default="RESULT", help="newOrderRespType"
    )
    p.add_argument("--warmup", type=_non_negative_float, default=1.0, help="unmeasured seconds")
    p.set_defaults(handler=_bench_api)


def _bench_ws(args: argparse.Namespace) -> int:
    from controlplane import bench_api

    report = bench_api.run_ws(
        args.clients,
        args.duration,
        args.trade_rate,
        args.quote_interval_ms,
        args.durability,
        args.warmup,
    )
    _emit_report(report)
    return 0


def add_bench_ws(subparsers: SubParsers) -> None:
    help = (
        "Benchmark WebSocket fan-out: `bourse serve` as a subprocess with the demo market "
        "maker and a trade driver, N clients on btcusdt@trade + btcusdt@depth@100ms; prints "
        "one JSON line (messages/s, delivery lag percentiles in ms, gaps, disconnects)."
    )
    p = subparsers.add_parser("ws", help=help, description=help)
    p.add_argument("--clients", type=_positive_int, default=100, help="WebSocket clients")
    p.add_argument("--duration", type=_positive_float, default=10.0, help="measured seconds")
    p.add_argument("--trade-rate", type=_positive_float, default=20.0, help="trades/s driven")
    p.add_argument(
        "--quote-interval-ms", type=_positive_int, default=50, help="market maker requote"
    )
    p.add_argument("--durability", choices=POLICIES, default="write", help="node.durability")
    p.add_argument("--warmup", type=_non_negative_float, default=1.0, help="unmeasured seconds")
    p.set_defaults(handler=_bench_ws)


BENCH_COMMANDS: tuple[Registrar, ...] = (
    add_bench_engine,
    add_bench_pipeline,
    add_bench_replay,
    add_bench_gateway,
    add_bench_bridge,
    add_bench_api,
    add_bench_ws,
)


def add_bench(subparsers: SubParsers) -> None:
    _group(subparsers, "bench", "Run benchmarks.", BENCH_COMMANDS)


# --- replay ---------------------------------------------------------------------------------


def _replay_lobster(args: argparse.Namespace) -> int:
    for path in args.zips:
        _emit(replay_lobster(path, args.max_messages))
    return 0


def add_replay_lobster(subparsers: SubParsers) -> None:
    help = "Replay LOBSTER sample zips through the engine; prints one JSON line per zip."
    p = subparsers.add_parser("lobster", help=help, description=help)
    p.add_argument("zips", nargs="+", type=Path, metavar="ZIP", help="a LOBSTER sample zip")
    p.add_argument("--max-messages", type=_positive_int, default=None, metavar="N")
    p.set_defaults(handler=_replay_lobster)


REPLAY_COMMANDS: tuple[Registrar, ...] = (add_replay_lobster,)


def add_replay(subparsers: SubParsers) -> None:
    _group(subparsers, "replay", "Replay recorded market data through the engine.", REPLAY_COMMANDS)


# --- node -----------------------------------------------------------------------------------


def _wait_strategy(text: str) -> Any:
    """``busy-spin``, ``yield``, ``spin-then-park[:SPINS:PARK_TIMEOUT_US]`` in serde form."""
    name, *params = text.strip().lower().replace("_", "-").split(":")
    if name == "busy-spin" and not params:
        return "busy_spin"
    if name == "yield" and not params:
        return "yield"
    if name == "spin-then-park" and not params:
        return {"spin_then_park": {"spins": 1000, "park_timeout_us": 1000}}
    if name == "spin-then-park" and len(params) == 2 and all(p.isdigit() for p in params):
        spins, park_us = (int(p) for p in params)
        return {"spin_then_park": {"spins": spins, "park_timeout_us": park_us}}
    raise argparse.ArgumentTypeError(
        f"unknown wait strategy {text!r}: expected busy-spin, yield, spin-then-park "
        "or spin-then-park:SPINS:PARK_TIMEOUT_US"
    )


def node_config(args: argparse.Namespace) -> NodeConfig:
    """The node config: the ``--config`` file (TOML or JSON), then the flags over it."""
    config: dict[str, Any] = {}
    if args.config is not None:
        path: Path = args.config
        try:
            text = path.read_text()
        except OSError as err:
            raise NodeError(f"cannot read config {path}: {err.strerror}") from err
        try:
            loaded = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
            raise NodeError(f"invalid config {path}: {err}") from err
        if not isinstance(loaded, dict):
            raise NodeError(f"invalid config {path}: expected a table/object at the top")
        config.update(loaded)
    flags = {
        "data_dir": None if args.data_dir is None else str(args.data_dir),
        "durability": getattr(args, "durability", None),
        "snapshot_every_commands": getattr(args, "snapshot_every", None),
        "segment_bytes": getattr(args, "segment_bytes", None),
        "keep_snapshots": getattr(args, "keep_snapshots", None),
        "wait": getattr(args, "wait", None),
        "pipeline": getattr(args, "pipeline", None),
        "order_capacity": args.order_capacity,
        "levels_per_side": args.levels_per_side,
    }
    config.update({key: value for key, value in flags.items() if value is not None})
    cores = {
        "engine": getattr(args, "engine_core", None),
        "sequencer": getattr(args, "sequencer_core", None),
        "publisher": getattr(args, "publisher_core", None),
    }
    if any(core is not None for core in cores.values()):
        merged = dict(config.get("cores") or {})
        merged.update({key: value for key, value in cores.items() if value is not None})
        config["cores"] = merged
    if "data_dir" not in config:
        raise NodeError("no data directory: pass --data-dir or set data_dir in --config")
    return cast(NodeConfig, config)


def _parse_line(line: str) -> tuple[Any, Command | None, str | None]:
    """One stdin line: ``(ref, command, None)`` or ``(ref, None, error)``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return None, None, f"invalid JSON: {err}"
    if not isinstance(obj, dict):
        return None, None, "a command line must be a JSON object"
    ref = obj.pop("ref", None)
    command = cast(Command, obj)
    try:
        encode_command(command)
    except EngineError as err:
        return ref, None, str(err)
    return ref, command, None


_STOP = object()
"""Queued by EOF on stdin or by a signal: stop after the batch in hand."""


def _read_lines(lines: queue.SimpleQueue[object]) -> None:
    for line in sys.stdin:
        lines.put(line)
    lines.put(_STOP)


# Lines submitted together at most; more waiting lines are left for the next round.
STDIO_BATCH = 256


def _serve(node: Node, lines: queue.SimpleQueue[object]) -> None:
    """Submit each line from the queue; print each ack once the node acknowledged it, in order.

    Lines that arrive while a batch is in flight are submitted together as the next batch
    (pipelined, one group commit); a line that is not a command gets an ``error`` line and
    no sequence number. Returns at ``_STOP``.
    """
    stop = False
    while not stop:
        batch = [lines.get()]
        while len(batch) < STDIO_BATCH and not lines.empty():
            batch.append(lines.get())
        stop = _STOP in batch
        parsed = [_parse_line(line) for line in batch if isinstance(line, str) and line.strip()]
        commands = [command for _, command, _ in parsed if command is not None]
        acks = iter(node.submit_many(commands) if commands else [])
        for ref, command, error in parsed:
            if command is None:
                _emit(json.dumps({"error": error, "ref": ref}))
            else:
                ack = next(acks)
                line = {"seq": ack["seq"], "timestamp_ns": ack["timestamp_ns"]}
                _emit(json.dumps({**line, "events": ack["events"], "ref": ref}))


def _node_run(args: argparse.Namespace) -> int:
    config = node_config(args)
    lines: queue.SimpleQueue[object] = queue.SimpleQueue()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Graceful stop after the batch in hand (SimpleQueue.put is safe in a signal
        # handler); a second signal gets the default behaviour.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        lines.put(_STOP)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Node(config) as node:
            try:
                _emit(json.dumps({"event": "ready", "recovery": node.recovery()}))
                if args.stdio:
                    reader = threading.Thread(
                        target=_read_lines, args=(lines,), name="bourse-stdin", daemon=True
                    )
                    reader.start()
                _serve(node, lines)
            except BrokenPipeError:
                # Whoever reads our output is gone: stop quietly (and do not fail flushing
                # stdout at exit).
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            stats = node.stop()
        _emit(json.dumps({"event": "stopped", "stats": stats}))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _add_engine_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, metavar="D", help="journal and snapshot directory")
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="node config, .toml or .json (flags win)"
    )
    p.add_argument("--order-capacity", type=_positive_int, metavar="N", help="orders preallocated")
    p.add_argument(
        "--levels-per-side", type=_positive_int, metavar="N", help="price levels preallocated"
    )


def add_node_run(subparsers: SubParsers) -> None:
    help = (
        "Start (recovering) a node; prints a JSON ready line, and a stopped line on "
        "Ctrl-C/SIGTERM, or at EOF with --stdio."
    )
    p = subparsers.add_parser("run", help=help, description=help)
    _add_engine_config_flags(p)
    p.add_argument("--durability", choices=POLICIES, help="when a command is acknowledged")
    p.add_argument(
        "--snapshot-every", type=_non_negative_int, metavar="N", help="snapshot every N commands"
    )
    p.add_argument("--segment-bytes", type=_positive_int, metavar="N", help="journal segment size")
    p.add_argument("--keep-snapshots", type=_positive_int, metavar="N", help="snapshots kept")
    p.add_argument(
        "--wait",
        type=_wait_strategy,
        metavar="STRATEGY",
        help="idle wait: busy-spin, yield, spin-then-park[:SPINS:PARK_TIMEOUT_US]",
    )
    p.add_argument(
        "--pipeline",
        choices=("threads", "single"),
        help="a thread per stage (default), or one thread running all three in turn "
        "(small machines; pinned with --sequencer-core)",
    )
    for stage in ("engine", "sequencer", "publisher"):
        p.add_argument(
            f"--{stage}-core",
            type=_non_negative_int,
            metavar="N",
            help=f"pin the {stage} thread to core N",
        )
    p.add_argument(
        "--stdio",
        action="store_true",
        help='read JSON command lines from stdin (optional "ref" echoed); print an ack '
        "line per command once it is durable; stop at EOF",
    )
    p.set_defaults(handler=_node_run)


def _node_replay(args: argparse.Namespace) -> int:
    _emit(json.dumps(replay_journal(node_config(args))))
    return 0


def add_node_replay(subparsers: SubParsers) -> None:
    help = (
        "Replay a node's data directory (snapshot + journal) into a fresh engine, changing "
        "nothing on disk; prints the state hash, next_seq and the invariant check as JSON."
    )
    p = subparsers.add_parser("replay", help=help, description=help)
    _add_engine_config_flags(p)
    p.set_defaults(handler=_node_replay)


NODE_COMMANDS: tuple[Registrar, ...] = (add_node_run, add_node_replay)


def add_node(subparsers: SubParsers) -> None:
    _group(subparsers, "node", "Run or inspect a durable node.", NODE_COMMANDS)


# --- serve ----------------------------------------------------------------------------------


def _serve_command(args: argparse.Namespace) -> int:
    from controlplane.config import ConfigError, load_config
    from controlplane.serve import serve

    try:
        config = load_config(
            args.config,
            overrides={
                "server": {"data_dir": None if args.data_dir is None else str(args.data_dir)},
                "http": {"host": args.http_host, "port": args.http_port},
                "gateway": {"listen": args.gateway_listen},
                "node": {"durability": args.durability},
                "demo": {"enabled": False if args.no_demo else None},
            },
        )
    except ConfigError as err:
        print(f"bourse: error: {err}", file=sys.stderr)
        return 1
    serve(config, _emit)
    return 0


def add_serve(subparsers: SubParsers) -> None:
    help = (
        "Run the exchange: the node, the binary gateway and the REST API in one process, "
        "from bourse.toml (or --config), BOURSE_<SECTION>_<KEY> variables and these flags; "
        "with the demo listing, accounts and market maker on a fresh data directory."
    )
    p = subparsers.add_parser("serve", help=help, description=help)
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML config (default bourse.toml)")
    p.add_argument("--data-dir", type=Path, metavar="D", help="server.data_dir")
    p.add_argument("--http-host", metavar="H", help="http.host")
    p.add_argument("--http-port", type=_non_negative_int, metavar="P", help="http.port")
    p.add_argument("--gateway-listen", metavar="HOST:PORT", help="gateway.listen")
    p.add_argument("--durability", choices=POLICIES, help="node.durability")
    p.add_argument("--no-demo", action="store_true", help="demo.enabled = false")
    p.set_defaults(handler=_serve_command)


# --- entry point ----------------------------------------------------------------------------

COMMANDS: tuple[Registrar, ...] = (add_bench, add_replay, add_node, add_serve, add_admin)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bourse", description="Bourse exchange tools.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except EngineError as err:
        print(f"bourse: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
