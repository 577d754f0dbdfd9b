"""The server key and encryption at rest (AES-256-GCM).

Secrets the control plane must be able to read back (HMAC API key secrets, TOTP seeds) are
stored encrypted under one 32-byte server key:

- ``BOURSE_SERVER_KEY`` (64 hex digits) if set: the key lives outside the data directory
  (a secret manager, the service's environment), so a copy of the directory alone reveals
  nothing;
- else ``<data_dir>/server.key``: 32 random bytes, created with mode 0600 on first start
  (back it up with the data directory: without it the stored secrets cannot be decrypted).

A sealed value is ``nonce (12 random bytes) || ciphertext || tag (16 bytes)``; the caller's
associated data (e.g. the API key string) is authenticated but not stored, so a ciphertext
moved to another row does not decrypt. Sealing and opening are O(length of the secret).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILE = "server.key"
KEY_ENV = "BOURSE_SERVER_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12


class SecretBoxError(Exception):
    """A server key that is malformed, or a sealed value that does not open under it."""


class SecretBox:
    """Seals and opens small secrets with AES-256-GCM under the server key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretBoxError(f"the server key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def load(cls, data_dir: Path | str, env: Mapping[str, str] | None = None) -> SecretBox:
        """The server key from ``BOURSE_SERVER_KEY`` (hex), else ``<data_dir>/server.key``,
        created (0600, random) if missing."""
        environ = os.environ if env is None else env
        text = environ.get(KEY_ENV)
        if text:
            try:
                key = bytes.fromhex(text)
            except ValueError as err:
                raise SecretBoxError(f"{KEY_ENV} is not hex") from err
            return cls(key)
        path = Path(data_dir) / KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return cls(path.read_bytes())

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
        except InvalidTag as err:
            raise SecretBoxError("a stored secret does not decrypt under the server key") from err
