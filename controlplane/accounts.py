"""Users, sessions, API keys, TOTP, the anti-phishing code and notifications.

:class:`Accounts` is the service; it owns the SQLite tables ``users``, ``sessions``,
``api_keys``, ``notifications`` and ``account_counter`` (``Database.migrate("accounts")``).

Invariants:

- A user always has an engine account: registration creates it in the engine (through the
  command bridge) *before* the user row is committed; if the engine refuses, there is no
  user. Engine account ids are allocated from :data:`FIRST_USER_ACCOUNT` up by a committed
  counter, so an id is never handed out twice (a crash between the engine and the commit
  leaves an unused engine account, never a user without one).
- Passwords are stored only as argon2id hashes (argon2-cffi's ``PasswordHasher``, rehashed
  on login when its parameters change); session tokens only as SHA-256 digests; HMAC API
  secrets and TOTP seeds only sealed with AES-256-GCM under the server key
  (:mod:`controlplane.secretbox`; the API key string / user id is the associated data);
  Ed25519 keys only as the user's public key.
- API key ids (numeric, the binary gateway's ``key_id``) are never reused (SQLite
  AUTOINCREMENT, from :data:`FIRST_KEY_ID`, clear of the demo's gateway keys 1 to 99).
  A revoked key stays in the table, marked revoked, and is refused everywhere.
- An HMAC key with ``trade`` permission is also a binary-gateway key (same id, the secret's
  ASCII bytes as the gateway secret, the user's account) while the gateway runs: added on
  creation and at start (:meth:`Accounts.register_gateway_keys`), revoked on revoke.
- A frozen user (operators: :meth:`Accounts.set_frozen`) has its engine account frozen
  (``SetAccountStatus``; the engine refuses its new orders from any door) and its keys are
  refused for ``trade`` and ``withdraw`` on the REST API with ``-2015`` (Binance's answer
  for a key that may not do the action); ``read`` still works, with ``canTrade`` false.
- A TOTP code is accepted once: every acceptance records its 30-second step and only
  later steps are accepted afterwards (codes of the previous, current and next step are
  valid, for clock drift).
- TOTP codes cannot be guessed at the request rate: after :data:`TOTP_MAX_FAILURES` wrong
  codes for a user within :data:`TOTP_FAILURE_WINDOW_MS`, every code of that user (right or
  wrong) is refused with ``-1003`` (429, ``Retry-After``) until the window ends (counted in
  memory: a restart clears the counts).
- Every notification carries the user's anti-phishing code (or says that none is set).

Complexity: every lookup is one indexed SQLite query, O(log n); API keys used for signed
requests are cached in memory (dict by key string), so authentication after the first use
costs no query and no decryption. Password hashing runs on a worker thread (argon2 is slow
by design) so the loop never blocks on it.

Errors are :class:`controlplane.api.errors.ApiError` with Binance's codes (the HTTP layer
answers them as they are).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import re
import secrets
import sqlite3
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import argon2
import pyotp
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from controlplane import Node, NodeError
from controlplane.api.errors import (
    INVALID_PARAMETER,
    PARAM_NOT_REQUIRED,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    UNKNOWN,
    ApiError,
    mandatory,
)
from controlplane.bridge import EngineBridge
from controlplane.db import Database
from controlplane.messages import CreateAccount, SetAccountStatus
from controlplane.secretbox import SecretBox

log = logging.getLogger("bourse.accounts")

FIRST_USER_ACCOUNT = 1000
"""Engine accounts of registered users start here (below: the fee account and the demo)."""
FIRST_KEY_ID = 1000
"""API key ids start here (the demo's own gateway keys use 1 to 99)."""
SESSION_TTL_MS = 24 * 3600 * 1000
PASSWORD_MIN, PASSWORD_MAX = 12, 1024
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}\Z")
ANTI_PHISHING = re.compile(r"^[A-Za-z0-9]{4,20}\Z")
KEY_ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 64
API_KEY_FORMAT = re.compile(r"^[A-Za-z0-9]{64}\Z")
LABEL_MAX = 64
MAX_IPS = 30
TOTP_STEP_S = 30
TOTP_ISSUER = "Bourse"
TOTP_MAX_FAILURES = 5
TOTP_FAILURE_WINDOW_MS = 5 * 60 * 1000
SQLITE_INT_MAX = 2**63 - 1
"""The largest id a SQLite INTEGER holds; larger ids name no row."""

Permission = Literal["read", "trade", "withdraw"]
PERMISSIONS: tuple[Permission, ...] = ("read", "trade", "withdraw")
KeyType = Literal["HMAC_SHA256", "ED25519"]

SCHEMA = [
    [
        """CREATE TABLE account_counter (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            next_account INTEGER NOT NULL
        )""",
        f"INSERT INTO account_counter (id, next_account) VALUES (1, {FIRST_USER_ACCOUNT})",
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL,
            account INTEGER NOT NULL UNIQUE,
            frozen INTEGER NOT NULL DEFAULT 0,
            totp_sealed BLOB,
            totp_enabled INTEGER NOT NULL DEFAULT 0,
            totp_last_step INTEGER NOT NULL DEFAULT 0,
            anti_phishing TEXT,
            created_ms INTEGER NOT NULL
        )""",
        """CREATE TABLE sessions (
            token_sha256 BLOB PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id),
            created_ms INTEGER NOT NULL,
            expires_ms INTEGER NOT NULL
        )""",
        "CREATE INDEX sessions_by_user ON sessions (user_id)",
        """CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL REFERENCES users (id),
            api_key TEXT NOT NULL UNIQUE,
            key_type TEXT NOT NULL,
            secret_sealed BLOB,
            public_key_pem TEXT,
            label TEXT NOT NULL,
            permissions TEXT NOT NULL,
            ips TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            revoked_ms INTEGER
        )""",
        "CREATE INDEX api_keys_by_user ON api_keys (user_id)",
        f"INSERT INTO sqlite_sequence (name, seq) VALUES ('api_keys', {FIRST_KEY_ID - 1})",
        """CREATE TABLE notifications (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id),
            created_ms INTEGER NOT NULL,
            subject TEXT NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX notifications_by_user ON notifications (user_id, id)",
    ]
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def invalid(msg: str) -> ApiError:
    return ApiError(INVALID_PARAMETER, msg)


def unauthorized(msg: str = "You are not authorized to execute this request.") -> ApiError:
    return ApiError(UNAUTHORIZED, msg, 401)


def random_key_string() -> str:
    """64 characters from ``[A-Za-z0-9]`` (~381 bits)."""
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


@dataclass(frozen=True)
class User:
    id: int
    username: str
    account: int
    frozen: bool
    totp_enabled: bool
    anti_phishing: str | None
    created_ms: int


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed (no secret)."""

    id: int
    user_id: int
    api_key: str
    key_type: KeyType
    label: str
    permissions: frozenset[str]
    ips: tuple[IpNetwork, ...]
    created_ms: int
    revoked_ms: int | None

    def allows_ip(self, address: str | None) -> bool:
        """Whether a request from ``address`` may use this key (no allowlist: any)."""
        if not self.ips:
            return True
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.ips)


@dataclass(frozen=True)
class KeyCredentials:
    """What verifying a signature with a key needs (cached per key string)."""

    key: ApiKey
    user: User
    hmac_secret: bytes | None
    """The HMAC secret's ASCII bytes (HMAC_SHA256 keys)."""
    ed25519: Ed25519PublicKey | None


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str | None
    """The HMAC secret, returned once at creation (None for Ed25519 keys)."""


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_ips(entries: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Addresses or CIDRs (``10.0.0.0/8``); -1130 on anything else."""
    networks: list[IpNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise invalid(f"Data sent for parameter 'ips' is not valid: {entry!r}.") from None
    if len(networks) > MAX_IPS:
        raise invalid(f"Data sent for parameter 'ips' is not valid: at most {MAX_IPS} entries.")
    return tuple(networks)


class Accounts:
    """The accounts service (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        bridge: EngineBridge,
        node: Node,
        box: SecretBox,
        *,
        hasher: argon2.PasswordHasher | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.bridge = bridge
        self.node = node
        self.box = box
        self.hasher = hasher or argon2.PasswordHasher()
        self.clock_ms = clock_ms
        """The wall clock in ms (sessions, TOTP steps, timestamps)."""
        self.session_ttl_ms = SESSION_TTL_MS
        self.gateway_keys = False
        """Whether trade keys are mirrored to the binary gateway (after
        :meth:`register_gateway_keys`)."""
        self._credentials: dict[str, KeyCredentials] = {}
        self._registering: set[str] = set()
        self._dummy_hash: str | None = None
        self._totp_failures: dict[int, tuple[int, int]] = {}
        """user id -> (start of the failure window in ms, wrong codes in it)."""
        db.migrate("accounts", SCHEMA)

    # --- users ---------------------------------------------------------------------------

    def _user_from_row(self, r: sqlite3.Row) -> User:
        return User(
            id=r["id"],
            username=r["username"],
            account=r["account"],
            frozen=bool(r["frozen"]),
            totp_enabled=bool(r["totp_enabled"]),
            anti_phishing=r["anti_phishing"],
            created_ms=r["created_ms"],
        )

    def user(self, user_id: int) -> User | None:
        if not 0 <= user_id <= SQLITE_INT_MAX:  # no such row (and SQLite could not bind it)
            return None
        row = self.db.conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return None if row is None else self._user_from_row(row)

    def user_by_name(self, username: str) -> User | None:
        row = self.db.conn.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        return None if row is None else self._user_from_row(row)

    async def register(
        self, username: str, password: str, *, adopt_account: int | None = None
    ) -> User:
        """Create a user and its engine account (see the module docstring).

        ``adopt_account``: use this existing engine account instead of allocating one (the
        demo user); the engine's ``account_exists`` is then fine."""
        if not USERNAME.match(username):
            raise invalid(
                "Data sent for parameter 'username' is not valid: 3 to 32 characters "
                "from A-Z, a-z, 0-9, '_', '.', '-'."
            )
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            raise invalid(
                f"Data sent for parameter 'password' is not valid: {PASSWORD_MIN} to "
                f"{PASSWORD_MAX} characters."
            )
        folded = username.lower()
        if folded in self._registering or self.user_by_name(username) is not None:
            raise invalid("Username is already taken.")
        self._registering.add(folded)
        try:
            password_hash = await asyncio.to_thread(self.hasher.hash, password)
            account = await self._create_engine_account(adopt_account)
            created = self.clock_ms()
            with self.db.transaction() as conn:
                cursor = conn.execute(
                    "INSERT INTO users (username, password_hash, account, created_ms) "
                    "VALUES (?, ?, ?, ?)",
                    (username, password_hash, account, created),
                )
            user_id = cursor.lastrowid
            assert user_id is not None
        finally:
            self._registering.discard(folded)
        user = self.user(user_id)
        assert user is not None
        log.info("user %d (%s) registered with account %d", user.id, username, account)
        return user

    def _reserve_account(self) -> int:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT next_account FROM account_counter WHERE id = 1").fetchone()
            account = int(row[0])
            conn.execute("UPDATE account_counter SET next_account = ? WHERE id = 1", (account + 1,))
        return account

    async def _create_engine_account(self, adopt: int | None) -> int:
        for _ in range(1000):
            account = adopt if adopt is not None else self._reserve_account()
            ack = await self.bridge.submit(CreateAccount(account=account))
            rejected = ack.rejection()
            if rejected is None:
                return account
            if rejected.reason == "account_exists":
                if adopt is not None:
                    return account
                continue  # taken outside this service: skip it
            log.error("the engine refused to create account %d: %s", account, rejected.reason)
            raise ApiError(UNKNOWN, "The engine refused to create the account.", 500)
        raise ApiError(UNKNOWN, "No free engine account id.", 500)

    async def set_frozen(self, user: User, frozen: bool) -> User:
        """Freeze or unfreeze a user (operators): the engine account's status, then the flag."""
        status: Literal["active", "frozen"] = "frozen" if frozen else "active"
        ack = await self.bridge.submit(SetAccountStatus(account=user.account, status=status))
        rejected = ack.rejection()
        if rejected is not None:
            log.error("set_account_status %d %s refused: %s", user.account, status, rejected)
            raise ApiError(UNKNOWN, "The engine refused to change the account status.", 500)
        with self.db.transaction() as conn:
            conn.execute("UPDATE users SET frozen = ? WHERE id = ?", (int(frozen), user.id))
        self._forget_user(user.id)
        updated = self.user(user.id)
        assert updated is not None
        return updated

    def _forget_user(self, user_id: int) -> None:
        for api_key in [k for k, c in self._credentials.items() if c.user.id == user_id]:
            del self._credentials[api_key]

    # --- passwords and sessions -----------------------------------------------------------

    async def login(
        self, username: str, password: str, totp_code: str | None = None
    ) -> tuple[str, int, User]:
        """A new session ``(token, expires_ms, user)``; -1002 (401) for a wrong name or
        password (the same answer and about the same time either way). A user with TOTP
        enabled must also give a valid, unused code (checked after the password, under the
        same guess limit as every code): -1002 (401) without one or with a wrong one, and no
        session is opened."""
        row = self.db.conn.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(self.hasher.hash, random_key_string())
            await asyncio.to_thread(self._verify, self._dummy_hash, password)
            raise unauthorized("Invalid username or password.")
        stored: str = row["password_hash"]
        if not await asyncio.to_thread(self._verify, stored, password):
            raise unauthorized("Invalid username or password.")
        user = self._user_from_row(row)
        if user.totp_enabled:
            if not totp_code:
                raise unauthorized("This account has two-factor authentication: send 'totpCode'.")
            if not self._accept_totp(user, totp_code):
                raise unauthorized("Invalid two-factor code.")
        if self.hasher.check_needs_rehash(stored):
            new_hash = await asyncio.to_thread(self.hasher.hash, password)
            with self.db.transaction() as conn:
                conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (new_hash, user.id))
        token = secrets.token_bytes(32).hex()
        created = self.clock_ms()
        expires = created + self.session_ttl_ms
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_ms <= ?", (created,))
            conn.execute(
                "INSERT INTO sessions (token_sha256, user_id, created_ms, expires_ms) "
                "VALUES (?, ?, ?, ?)",
                (_hash_token(token), user.id, created, expires),
            )
        self.notify(user, "New login", "A new session was opened for your account.")
        return token, expires, user

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(stored, password))
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def session_user(self, token: str) -> User:
        """The user of a live session; -1002 (401) if the token is unknown or expired."""
        if not token.isascii():  # a header's undecodable bytes (surrogates) hash to nothing
            raise unauthorized("Invalid or expired session.")
        row = self.db.conn.execute(
            "SELECT user_id, expires_ms FROM sessions WHERE token_sha256 = ?",
            (_hash_token(token),),
        ).fetchone()
        if row is None or row["expires_ms"] <= self.clock_ms():
            raise unauthorized("Invalid or expired session.")
        user = self.user(row["user_id"])
        assert user is not None
        return user

    def logout(self, token: str) -> None:
        self.session_user(token)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_hash_token(token),))

    # --- API keys -------------------------------------------------------------------------

    def _key_from_row(self, r: sqlite3.Row) -> ApiKey:
        return ApiKey(
            id=r["id"],
            user_id=r["user_id"],
            api_key=r["api_key"],
            key_type=r["key_type"],
            label=r["label"],
            permissions=frozenset(r["permissions"].split(",")),
            ips=parse_ips(json.loads(r["ips"])),
            created_ms=r["created_ms"],
            revoked_ms=r["revoked_ms"],
        )

    async def create_api_key(
        self,
        user: User,
        *,
        label: str,
        permissions: Iterable[str],
        ips: Iterable[str] = (),
        key_type: KeyType = "HMAC_SHA256",
        public_key_pem: str | None = None,
        totp_code: str | None = None,
        api_key: str | None = None,
        secret: str | None = None,
    ) -> CreatedKey:
        """Create a key. Withdraw permission needs TOTP enabled and a valid ``totp_code``.
        ``api_key``/``secret``: given values instead of random ones (the demo's key)."""
        perms = frozenset(permissions)
        if not perms or not perms <= set(PERMISSIONS):
            raise invalid(
                "Data sent for parameter 'permissions' is not valid: a non-empty subset of "
                "read, trade, withdraw."
            )
        if not label or len(label) > LABEL_MAX or not label.isprintable():
            raise invalid(
                f"Data sent for parameter 'label' is not valid: 1 to {LABEL_MAX} printable "
                "characters."
            )
        networks = parse_ips(ips)
        public_pem: str | None = None
        if key_type == "ED25519":
            if not public_key_pem:
                raise mandatory("publicKey")
            try:
                loaded = load_pem_public_key(public_key_pem.encode())
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise invalid("Data sent for parameter 'publicKey' is not valid.") from None
            if not isinstance(loaded, Ed25519PublicKey):
                raise invalid("Data sent for parameter 'publicKey' is not valid: not Ed25519.")
            public_pem = public_key_pem
        elif public_key_pem is not None:
            raise ApiError(PARAM_NOT_REQUIRED, "Parameter 'publicKey' sent when not required.")
        if "withdraw" in perms:
            if not user.totp_enabled:
                raise invalid("Two-factor authentication must be enabled for withdraw keys.")
            if not totp_code:
                raise mandatory("totpCode")
            if not self.verify_totp(user, totp_code):
                raise unauthorized("Invalid or already used two-factor code.")
        key_string = api_key or random_key_string()
        secret_text: str | None = None
        sealed: bytes | None = None
        if key_type == "HMAC_SHA256":
            secret_text = secret or random_key_string()
            sealed = self.box.seal(secret_text.encode(), key_string.encode())
        created = self.clock_ms()
        perm_text = ",".join(p for p in PERMISSIONS if p in perms)
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO api_keys (user_id, api_key, key_type, secret_sealed, "
                "public_key_pem, label, permissions, ips, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user.id,
                    key_string,
                    key_type,
                    sealed,
                    public_pem,
                    label,
                    perm_text,
                    json.dumps([str(n) for n in networks]),
                    created,
                ),
            )
        key_id = cursor.lastrowid
        assert key_id is not None
        key = self.api_key(key_id)
        assert key is not None
        if self.gateway_keys and secret_text is not None and "trade" in perms:
            self._gateway_add(key, secret_text.encode(), user.account)
        self.notify(
            user,
            "API key created",
            f"API key {key.id} ({label}) was created with permissions {perm_text}.",
        )
        return CreatedKey(key, secret_text)

    def api_key(self, key_id: int) -> ApiKey | None:
        if not 0 <= key_id <= SQLITE_INT_MAX:
            return None
        row = self.db.conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else self._key_from_row(row)

    def list_api_keys(self, user: User) -> list[ApiKey]:
        rows = self.db.conn.execute(
            "SELECT * FROM api_keys WHERE user_id = ? ORDER BY id", (user.id,)
        ).fetchall()
        return [self._key_from_row(r) for r in rows]

    def revoke_api_key(self, user: User, key_id: int) -> ApiKey:
        """Revoke one of the user's keys (REST and gateway); -1130 if it is not theirs or
        already revoked."""
        key = self.api_key(key_id)
        if key is None or key.user_id != user.id:
            raise invalid("Unknown API key id.")
        if key.revoked_ms is not None:
            raise invalid("The API key is already revoked.")
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_ms = ? WHERE id = ?", (self.clock_ms(), key_id)
            )
        self._credentials.pop(key.api_key, None)
        if self.gateway_keys:
            try:
                self.node.revoke_api_key(key_id)
            except NodeError as err:
                log.error("gateway: revoking key %d failed: %s", key_id, err)
        self.notify(user, "API key revoked", f"API key {key.id} ({key.label}) was revoked.")
        revoked = self.api_key(key_id)
        assert revoked is not None
        return revoked

    def credentials(self, api_key: str) -> KeyCredentials | None:
        """The live (not revoked) key with this key string, its user and its verifier."""
        cached = self._credentials.get(api_key)
        if cached is not None:
            return cached
        row = self.db.conn.execute(
            "SELECT * FROM api_keys WHERE api_key = ? AND revoked_ms IS NULL", (api_key,)
        ).fetchone()
        if row is None:
            return None
        key = self._key_from_row(row)
        user = self.user(key.user_id)
        assert user is not None
        secret: bytes | None = None
        public: Ed25519PublicKey | None = None
        if key.key_type == "HMAC_SHA256":
            secret = self.box.open(row["secret_sealed"], api_key.encode())
        else:
            loaded = load_pem_public_key(row["public_key_pem"].encode())
            assert isinstance(loaded, Ed25519PublicKey)
            public = loaded
        found = KeyCredentials(key, user, secret, public)
        self._credentials[api_key] = found
        return found

    def register_gateway_keys(self) -> int:
        """Add every live HMAC key with trade permission to the running binary gateway (at
        start), and mirror later changes; how many were added."""
        rows = self.db.conn.execute(
            "SELECT k.*, u.account FROM api_keys k JOIN users u ON u.id = k.user_id "
            "WHERE k.revoked_ms IS NULL AND k.key_type = 'HMAC_SHA256'"
        ).fetchall()
        added = 0
        for row in rows:
            key = self._key_from_row(row)
            if "trade" not in key.permissions:
                continue
            secret = self.box.open(row["secret_sealed"], key.api_key.encode())
            self._gateway_add(key, secret, row["account"])
            added += 1
        self.gateway_keys = True
        return added

    def _gateway_add(self, key: ApiKey, secret: bytes, account: int) -> None:
        self.node.add_api_key(key.id, secret, account)

    # --- TOTP -----------------------------------------------------------------------------

    def totp_begin(self, user: User) -> tuple[str, str]:
        """A new TOTP seed for the user (pending until confirmed): ``(secret, otpauth URI)``.
        -1130 if TOTP is already enabled."""
        if user.totp_enabled:
            raise invalid("Two-factor authentication is already enabled.")
        seed = pyotp.random_base32()
        sealed = self.box.seal(seed.encode(), self._totp_aad(user))
        with self.db.transaction() as conn:
            conn.execute("UPDATE users SET totp_sealed = ? WHERE id = ?", (sealed, user.id))
        uri = pyotp.TOTP(seed).provisioning_uri(name=user.username, issuer_name=TOTP_ISSUER)
        return seed, uri

    def totp_confirm(self, user: User, code: str) -> User:
        """Enable TOTP with the first code of the pending seed."""
        if user.totp_enabled:
            raise invalid("Two-factor authentication is already enabled.")
        if self._totp_seed(user) is None:
            raise invalid("Two-factor authentication has not been started.")
        if not self._accept_totp(user, code):
            raise unauthorized("Invalid or already used two-factor code.")
        with self.db.transaction() as conn:
            conn.execute("UPDATE users SET totp_enabled = 1 WHERE id = ?", (user.id,))
        self._forget_user(user.id)
        self.notify(user, "Two-factor authentication enabled", "TOTP is now required.")
        updated = self.user(user.id)
        assert updated is not None
        return updated

    def verify_totp(self, user: User, code: str) -> bool:
        """Whether ``code`` is a valid, not yet used TOTP code of the user's enabled seed
        (accepting it uses it up: see the module docstring)."""
        current = self.user(user.id)
        if current is None or not current.totp_enabled:
            return False
        return self._accept_totp(current, code)

    def _totp_aad(self, user: User) -> bytes:
        return f"totp:{user.id}".encode()

    def _totp_seed(self, user: User) -> str | None:
        row = self.db.conn.execute(
            "SELECT totp_sealed FROM users WHERE id = ?", (user.id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return self.box.open(row[0], self._totp_aad(user)).decode()

    def _accept_totp(self, user: User, code: str) -> bool:
        now = self.clock_ms()
        window_start, failures = self._totp_failures.get(user.id, (now, 0))
        if now - window_start >= TOTP_FAILURE_WINDOW_MS:
            window_start, failures = now, 0
        if failures >= TOTP_MAX_FAILURES:
            retry_s = -(-(window_start + TOTP_FAILURE_WINDOW_MS - now) // 1000)
            raise ApiError(
                TOO_MANY_REQUESTS,
                "Too many wrong two-factor codes; try again later.",
                429,
                {"Retry-After": str(max(1, retry_s))},
            )
        if not self._check_totp_code(user, code):
            self._totp_failures[user.id] = (window_start, failures + 1)
            return False
        return True

    def _check_totp_code(self, user: User, code: str) -> bool:
        seed = self._totp_seed(user)
        if seed is None or not (len(code) == 6 and code.isascii() and code.isdigit()):
            return False
        totp = pyotp.TOTP(seed)
        row = self.db.conn.execute(
            "SELECT totp_last_step FROM users WHERE id = ?", (user.id,)
        ).fetchone()
        last_step = int(row[0])
        now_step = self.clock_ms() // 1000 // TOTP_STEP_S
        accepted: int | None = None
        for step in (now_step - 1, now_step, now_step + 1):
            # Compare every candidate (constant work whichever matches).
            matches = secrets.compare_digest(totp.generate_otp(step).encode(), code.encode())
            if matches and step > last_step:
                accepted = step
        if accepted is None:
            return False
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
                (accepted, user.id, accepted),
            )
        return True

    # --- anti-phishing code and notifications ---------------------------------------------

    def set_anti_phishing(self, user: User, code: str) -> User:
        if not ANTI_PHISHING.match(code):
            raise invalid("Data sent for parameter 'code' is not valid: 4 to 20 letters or digits.")
        with self.db.transaction() as conn:
            conn.execute("UPDATE users SET anti_phishing = ? WHERE id = ?", (code, user.id))
        self._forget_user(user.id)
        updated = self.user(user.id)
        assert updated is not None
        self.notify(updated, "Anti-phishing code set", "Your anti-phishing code was changed.")
        return updated

    def notify(self, user: User, subject: str, body: str) -> int:
        """Record a notification for the user (what an e-mail sender would deliver), with
        the anti-phishing code; its id."""
        current = self.user(user.id) or user
        if current.anti_phishing:
            footer = f"Anti-phishing code: {current.anti_phishing}"
        else:
            footer = "Anti-phishing code: not set (set one to recognise genuine messages)"
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO notifications (user_id, created_ms, subject, body) "
                "VALUES (?, ?, ?, ?)",
                (user.id, self.clock_ms(), subject, f"{body}\n\n{footer}"),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def notifications(self, user: User, limit: int = 100) -> list[dict[str, object]]:
        """The user's notifications, newest first."""
        rows = self.db.conn.execute(
            "SELECT id, created_ms, subject, body FROM notifications WHERE user_id = ? "
            "ORDER BY id DESC LIMIT ?",
            (user.id, limit),
        ).fetchall()
        return [
            {"id": r["id"], "subject": r["subject"], "body": r["body"], "time": r["created_ms"]}
            for r in rows
        ]
