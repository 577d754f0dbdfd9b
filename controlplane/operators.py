"""Operator credentials and the operators' audit trail.

Operators are not users: they have their own table (``operators``: name, argon2id password
hash, role), their own bearer tokens (``operator_tokens``) and no engine account. Every
``/admin/v1`` request carries ``Authorization: Bearer <token>`` (:mod:`controlplane.api.admin`).

How operators come to exist: the first one only offline, ``bourse admin operator add NAME``
(:func:`add_operator_offline`), which writes to the SQLite database directly and prints the
password and a token once; the demo creates ``demo-operator`` the same way at first start.
Later tokens come from ``POST /admin/v1/login`` with the name and password.

Roles: ``admin`` may do everything; ``auditor`` may only read (``GET``).

Invariants:

- Passwords are stored only as argon2id hashes; tokens only as SHA-256 digests (a token is
  32 random bytes, so a digest lookup leaks nothing useful and needs no constant-time
  compare). Tokens from ``operator add`` do not expire; tokens from login expire after
  :data:`LOGIN_TOKEN_TTL_MS`.
- Every operator action is appended to ``operator_audit`` (operator, action, target, detail,
  outcome, time); rows are never updated or deleted.

Complexity: token lookup is one primary-key query, O(log n); an audit record is one insert.
All methods run on the asyncio loop thread (or in the offline CLI, without a loop); the
password check of :meth:`Operators.login` runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import argon2

from controlplane.db import Database

TOKEN_PREFIX = "bop_"
"""Operator tokens start with this (so a leaked one is recognisable in a secret scan)."""
LOGIN_TOKEN_TTL_MS = 12 * 3600 * 1000
NAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}\Z")
PASSWORD_MIN, PASSWORD_MAX = 12, 1024
Role = Literal["admin", "auditor"]
ROLES: tuple[Role, ...] = ("admin", "auditor")

SCHEMA = [
    [
        """CREATE TABLE operators (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        )""",
        """CREATE TABLE operator_tokens (
            token_sha256 BLOB PRIMARY KEY,
            operator_id INTEGER NOT NULL REFERENCES operators (id),
            created_ms INTEGER NOT NULL,
            expires_ms INTEGER
        )""",
        """CREATE TABLE operator_audit (
            id INTEGER PRIMARY KEY,
            operator_id INTEGER NOT NULL REFERENCES operators (id),
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL,
            outcome INTEGER NOT NULL,
            time_ms INTEGER NOT NULL
        )""",
        "CREATE INDEX operator_audit_by_time ON operator_audit (time_ms)",
    ]
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class OperatorError(ValueError):
    """A bad operator name, password or role, or a name already taken."""


@dataclass(frozen=True)
class Operator:
    id: int
    name: str
    role: Role
    created_ms: int


class Operators:
    """The operators service (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        hasher: argon2.PasswordHasher | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.hasher = hasher or argon2.PasswordHasher()
        self.clock_ms = clock_ms
        db.migrate("operators", SCHEMA)

    @staticmethod
    def _from_row(row: sqlite3.Row) -> Operator:
        return Operator(row["id"], row["name"], row["role"], row["created_ms"])

    def by_name(self, name: str) -> Operator | None:
        row = self.db.conn.execute("SELECT * FROM operators WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._from_row(row)

    def all(self) -> list[Operator]:
        rows = self.db.conn.execute("SELECT * FROM operators ORDER BY id").fetchall()
        return [self._from_row(r) for r in rows]

    def add(
        self, name: str, password: str, role: Role = "admin", *, token: str | None = None
    ) -> tuple[Operator, str]:
        """Create an operator and its first (non-expiring) token; ``(operator, token)``.
        ``token``: use this value (the demo's, written to demo-keys.json first)."""
        if not NAME.match(name):
            raise OperatorError(
                "operator name: 3 to 32 characters from A-Z, a-z, 0-9, '_', '.', '-'"
            )
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            raise OperatorError(f"password: {PASSWORD_MIN} to {PASSWORD_MAX} characters")
        if role not in ROLES:
            raise OperatorError(f"role: one of {', '.join(ROLES)}")
        if self.by_name(name) is not None:
            raise OperatorError(f"operator {name!r} exists already")
        password_hash = self.hasher.hash(password)
        token = token or new_token()
        created = self.clock_ms()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO operators (name, password_hash, role, created_ms) VALUES (?, ?, ?, ?)",
                (name, password_hash, role, created),
            )
            operator_id = cursor.lastrowid
            conn.execute(
                "INSERT INTO operator_tokens (token_sha256, operator_id, created_ms, expires_ms) "
                "VALUES (?, ?, ?, NULL)",
                (_digest(token), operator_id, created),
            )
        operator = self.by_name(name)
        assert operator is not None
        return operator, token

    async def login(self, name: str, password: str) -> tuple[Operator, str, int] | None:
        """A new token for a name and password: ``(operator, token, expires_ms)``, or None
        (the same answer for an unknown name and a wrong password). The hash is checked on
        a worker thread (argon2 is slow by design; the loop must not wait on it)."""
        row = self.db.conn.execute("SELECT * FROM operators WHERE name = ?", (name,)).fetchone()
        # Verify against a real hash either way, so both failures take about as long.
        if row is not None:
            stored = row["password_hash"]
        else:
            if self._dummy is None:
                self._dummy = await asyncio.to_thread(self.hasher.hash, secrets.token_hex(16))
            stored = self._dummy
        ok = await asyncio.to_thread(self._verify, stored, password)
        if row is None or not ok:
            return None
        token = new_token()
        created = self.clock_ms()
        expires = created + LOGIN_TOKEN_TTL_MS
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM operator_tokens WHERE expires_ms <= ?", (created,))
            conn.execute(
                "INSERT INTO operator_tokens (token_sha256, operator_id, created_ms, expires_ms) "
                "VALUES (?, ?, ?, ?)",
                (_digest(token), row["id"], created, expires),
            )
        return self._from_row(row), token, expires

    _dummy: str | None = None

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(stored, password))
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def authenticate(self, token: str) -> Operator | None:
        """The operator of a live token, or None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128 or not token.isascii():
            return None
        row = self.db.conn.execute(
            "SELECT o.*, t.expires_ms FROM operator_tokens t "
            "JOIN operators o ON o.id = t.operator_id WHERE t.token_sha256 = ?",
            (_digest(token),),
        ).fetchone()
        if row is None:
            return None
        if row["expires_ms"] is not None and row["expires_ms"] <= self.clock_ms():
            return None
        return self._from_row(row)

    def audit(
        self, operator: Operator, action: str, target: str, detail: Any, outcome: int
    ) -> None:
        """Append one action to the audit trail (``outcome``: the HTTP status answered)."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO operator_audit (operator_id, action, target, detail, outcome, "
                "time_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    operator.id,
                    action,
                    target,
                    json.dumps(detail, sort_keys=True, default=str),
                    outcome,
                    self.clock_ms(),
                ),
            )

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit records first."""
        rows = self.db.conn.execute(
            "SELECT a.*, o.name FROM operator_audit a JOIN operators o ON o.id = a.operator_id "
            "ORDER BY a.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {
                "id": r["id"],
                "operator": r["name"],
                "action": r["action"],
                "target": r["target"],
                "detail": json.loads(r["detail"]),
                "outcome": r["outcome"],
                "time": r["time_ms"],
            }
            for r in rows
        ]


def add_operator_offline(
    data_dir: Path, name: str, password: str, role: Role = "admin"
) -> tuple[Operator, str]:
    """``bourse admin operator add``: create an operator straight in the data directory's
    database (the server may be running: SQLite serialises the writers)."""
    db = Database.in_data_dir(data_dir)
    try:
        return Operators(db).add(name, password, role)
    finally:
        db.close()
