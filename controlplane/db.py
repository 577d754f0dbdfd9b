"""The control plane's SQLite database: one file, ``<data_dir>/controlplane.sqlite3``.

It holds what the engine does not: users, API keys (secrets encrypted), listings' names,
withdrawals, and the projections of the event stream (orders, trades, klines, ledger) that
the history endpoints query. Projections are rebuildable from the node's log; everything
else is the control plane's own durable state (back it up with the data directory).

One connection, used only from the asyncio loop thread (queries are short and indexed; WAL
mode, ``synchronous=NORMAL``: a committed transaction survives a process crash, and an OS
crash can lose only the last transactions, never corrupt the file). Each module owns its
tables and declares them with :meth:`Database.migrate`, a list of statements per version,
applied once, in order, inside a transaction.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

FILE_NAME = "controlplane.sqlite3"


class Database:
    """The SQLite connection and its schema versions (table ``schema_versions``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only, as the server key: it holds hashed and encrypted secrets, names and
            # the withdrawals' workflow. (SQLite gives its -wal and -shm files the same mode.)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        # Autocommit mode: transactions are explicit (:meth:`transaction`).
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (module TEXT PRIMARY KEY, version INTEGER)"
        )

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> Database:
        return cls(Path(data_dir) / FILE_NAME)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` if the block raises)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def migrate(self, module: str, versions: Sequence[Sequence[str]]) -> None:
        """Bring ``module``'s tables to ``len(versions)``: apply ``versions[i]`` (a list of
        statements) for every version not yet applied, each in its own transaction."""
        row = self.conn.execute(
            "SELECT version FROM schema_versions WHERE module = ?", (module,)
        ).fetchone()
        done = 0 if row is None else int(row[0])
        if done > len(versions):
            raise RuntimeError(
                f"{self.path}: {module} schema is version {done}, newer than this code "
                f"({len(versions)})"
            )
        for version in range(done, len(versions)):
            with self.transaction() as conn:
                for statement in versions[version]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_versions (module, version) VALUES (?, ?) "
                    "ON CONFLICT (module) DO UPDATE SET version = excluded.version",
                    (module, version + 1),
                )

    def close(self) -> None:
        self.conn.close()
