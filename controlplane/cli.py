"""The ``bourse`` command line.

    bourse bench engine [--workload exchange-core|liquibook] [--ops N] [--seed S]
    bourse replay lobster ZIP [ZIP ...] [--max-messages N]

Every command is a pair: a handler ``(args) -> exit status`` and an ``add_*`` function that
registers its parser and sets the handler. Groups (``bench``, ``replay``) hold their commands
in a tuple. To add ``serve``, ``node`` or ``admin``, append an ``add_*`` to ``COMMANDS``; to
add ``bench pipeline`` or ``bench gateway``, append one to ``BENCH_COMMANDS``.

Errors a user can cause (a missing file, an unknown workload) are reported on stderr as
``bourse: error: ...`` with exit status 1; usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

from controlplane import EngineError, bench_engine, replay_lobster

Handler: TypeAlias = Callable[[argparse.Namespace], int]
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Registrar: TypeAlias = Callable[[SubParsers], None]

WORKLOADS = ("exchange-core", "liquibook")


def _emit(line: str) -> None:
    print(line, flush=True)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
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


BENCH_COMMANDS: tuple[Registrar, ...] = (add_bench_engine,)


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


# --- entry point ----------------------------------------------------------------------------

COMMANDS: tuple[Registrar, ...] = (add_bench, add_replay)


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
