"""Request authentication for SIGNED endpoints, and the rate limits, exactly as Binance.

How a signed request is verified (:func:`authenticate`), in this order:

1. ``X-MBX-APIKEY`` header: missing or not 64 letters/digits → ``-2014`` "API-key format
   invalid." (HTTP 401); unknown or revoked → ``-2015`` "Invalid API-key, IP, or
   permissions for action." (401); the key has an IP allowlist and the client's address
   (the TCP peer; no proxy headers are trusted) is not in it → ``-2015``.
2. Parameters: the raw query string and the raw urlencoded body, each split at ``&``;
   a parameter sent twice (in either or across both) → ``-1101``; bytes that are not UTF-8
   after percent-decoding → ``-1100``. The *payload* that was signed ("totalParams") is the
   raw query string followed directly by the raw body, with the ``signature=…`` pair taken
   out, everything else in the order sent.
3. ``timestamp`` (ms) and ``signature`` are mandatory → ``-1102``; malformed numbers →
   ``-1100``. ``recvWindow`` (ms) defaults to 5000; above 60000 → ``-1131`` "recvWindow
   must be less than 60000." The request is processed only if ``timestamp < now + 1000``
   (else ``-1021`` "Timestamp for this request was 1000ms ahead of the server's time.") and
   ``now - timestamp <= recvWindow`` (else ``-1021`` "Timestamp for this request is outside
   of the recvWindow."), HTTP 400.
4. Signature: HMAC-SHA256 keys: lower-case hex of HMAC-SHA256(secret, payload), compared
   with :func:`hmac.compare_digest`; Ed25519 keys: base64 of the Ed25519 signature of the
   payload. Mismatch → ``-1022`` "Signature for this request is not valid." (400).
5. Permission: the key must have the endpoint's permission (``read``, ``trade``,
   ``withdraw``), and ``trade``/``withdraw`` are refused for a frozen user → ``-2015``.
6. ORDERS (endpoints marked ``orders=True`` with :func:`weighted`): the key's new-order
   count per 10 s and per day; over either → ``-1015`` "Too many new orders; current limit
   is N orders per 10 SECOND." (HTTP 429, ``Retry-After``), and the response carries
   ``X-MBX-ORDER-COUNT-10S`` and ``X-MBX-ORDER-COUNT-1D``.

Every failure is raised before anything changes. :attr:`SignedRequest.params` holds every
parameter except ``signature``, ``timestamp`` and ``recvWindow`` (those are the fields
``timestamp`` and ``recv_window``), so an endpoint can refuse the ones it does not know.

Rate limits (:func:`rate_limit_middleware`, on requests whose path starts with ``/api/`` or
``/sapi/``: :data:`LIMITED_PREFIXES`; ``/ws``, ``/stream``, ``/admin/v1`` and ``/metrics`` are
not weighed, so a Prometheus scrape is never refused): REQUEST_WEIGHT per client IP per
minute, fixed windows aligned to the clock as Binance's; an endpoint's weight is set with
:func:`weighted` (default 1). Every such response carries ``X-MBX-USED-WEIGHT-1M``; a request
that would go over the limit is not served: ``-1003`` (HTTP 429) with ``Retry-After`` (the
seconds to the window's end). (Binance's 418 IP bans for repeated 429s are not modelled.)
Limits come from the ``[limits]`` config table.

Complexity: authentication is O(length of the parameters) plus one dict lookup (keys are
cached by :class:`controlplane.accounts.Accounts`); each rate counter is a dict entry per
IP or key in the current window, cleared when the window turns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote_plus

from aiohttp import web
from cryptography.exceptions import InvalidSignature

from controlplane.accounts import API_KEY_FORMAT, Accounts, KeyCredentials
from controlplane.api import Exchange
from controlplane.api.errors import (
    BAD_API_KEY_FMT,
    BAD_RECV_WINDOW,
    ILLEGAL_CHARS,
    INVALID_SIGNATURE,
    INVALID_TIMESTAMP,
    REJECTED_MBX_KEY,
    TOO_MANY_ORDERS,
    TOO_MANY_PARAMETERS,
    TOO_MANY_REQUESTS,
    UNREAD_PARAMETERS,
    ApiError,
    Handler,
    illegal,
    mandatory,
)
from controlplane.config import LimitsSection
from controlplane.secretbox import SecretBox

ACCOUNTS = web.AppKey("accounts", Accounts)
API_KEY_HEADER = "X-MBX-APIKEY"
RECV_WINDOW_DEFAULT, RECV_WINDOW_MAX = 5000, 60000
AHEAD_TOLERANCE_MS = 1000
NUMBER_RANGE = "^[0-9]{1,20}$"

WEIGHT_ATTR = "bourse_weight"
ORDERS_ATTR = "bourse_orders"
_ORDER_HEADERS = web.RequestKey("order_headers", dict[str, str])

H = TypeVar("H", bound=Handler)


def weighted(
    weight: int | Callable[[web.Request], int], *, orders: bool = False
) -> Callable[[H], H]:
    """Mark a handler's REQUEST_WEIGHT (or a function of the request giving it, for weights
    that depend on the query string) and whether each call places an order, for the ORDERS
    limits."""

    def mark(handler: H) -> H:
        setattr(handler, WEIGHT_ATTR, weight)
        setattr(handler, ORDERS_ATTR, orders)
        return handler

    return mark


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- rate limits ----------------------------------------------------------------------------


class FixedWindowCounter:
    """Counts per key in fixed windows of ``interval_ms`` aligned to the epoch."""

    def __init__(self, limit: int, interval_ms: int) -> None:
        self.limit = limit
        self.interval_ms = interval_ms
        self._window = -1
        self._counts: dict[str, int] = {}

    def _turn(self, now: int) -> None:
        window = now // self.interval_ms
        if window != self._window:
            self._window = window
            self._counts.clear()

    def used(self, key: str, now: int) -> int:
        self._turn(now)
        return self._counts.get(key, 0)

    def retry_after_s(self, now: int) -> int:
        """Whole seconds until the current window ends (at least 1)."""
        end = (now // self.interval_ms + 1) * self.interval_ms
        return max(1, math.ceil((end - now) / 1000))

    def fits(self, key: str, amount: int, now: int) -> bool:
        return self.used(key, now) + amount <= self.limit

    def add(self, key: str, amount: int, now: int) -> int:
        used = self.used(key, now) + amount
        self._counts[key] = used
        return used


INTERVAL_NAMES = {60_000: ("MINUTE", 1), 10_000: ("SECOND", 10), 86_400_000: ("DAY", 1)}


def rate_limits(limits: LimitsSection) -> list[dict[str, object]]:
    """exchangeInfo's ``rateLimits`` for the configured limits."""
    return [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": limits.request_weight_per_minute,
        },
        {
            "rateLimitType": "ORDERS",
            "interval": "SECOND",
            "intervalNum": 10,
            "limit": limits.orders_per_10s,
        },
        {
            "rateLimitType": "ORDERS",
            "interval": "DAY",
            "intervalNum": 1,
            "limit": limits.orders_per_day,
        },
    ]


class RateLimiter:
    """REQUEST_WEIGHT per IP per minute and ORDERS per key per 10 s and per day."""

    def __init__(self, limits: LimitsSection, clock_ms: Callable[[], int] = now_ms) -> None:
        self.clock_ms = clock_ms
        self.weight = FixedWindowCounter(limits.request_weight_per_minute, 60_000)
        self.orders = [
            FixedWindowCounter(limits.orders_per_10s, 10_000),
            FixedWindowCounter(limits.orders_per_day, 86_400_000),
        ]

    def spend_weight(self, ip: str, weight: int) -> int:
        """Add a request's weight; the IP's weight used this minute. -1003 (429) if it would
        go over the limit (nothing is added then)."""
        now = self.clock_ms()
        if not self.weight.fits(ip, weight, now):
            used = self.weight.used(ip, now)
            raise ApiError(
                TOO_MANY_REQUESTS,
                f"Too much request weight used; current limit is {self.weight.limit} request "
                "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                "polling the API.",
                429,
                {
                    "Retry-After": str(self.weight.retry_after_s(now)),
                    "X-MBX-USED-WEIGHT-1M": str(used),
                },
            )
        return self.weight.add(ip, weight, now)

    def count_order(self, key_id: int) -> dict[str, str]:
        """Count one new order for the key; the order-count headers. -1015 (429) if either
        window is full (nothing is counted then)."""
        now = self.clock_ms()
        key = str(key_id)
        headers = self.order_headers(key_id, extra=0)
        for counter in self.orders:
            if not counter.fits(key, 1, now):
                name, num = INTERVAL_NAMES[counter.interval_ms]
                headers["Retry-After"] = str(counter.retry_after_s(now))
                raise ApiError(
                    TOO_MANY_ORDERS,
                    f"Too many new orders; current limit is {counter.limit} orders per "
                    f"{num} {name}.",
                    429,
                    headers,
                )
        for counter in self.orders:
            counter.add(key, 1, now)
        return self.order_headers(key_id, extra=0)

    def order_headers(self, key_id: int, *, extra: int) -> dict[str, str]:
        now = self.clock_ms()
        ten_s, day = (c.used(str(key_id), now) + extra for c in self.orders)
        return {"X-MBX-ORDER-COUNT-10S": str(ten_s), "X-MBX-ORDER-COUNT-1D": str(day)}


LIMITER = web.AppKey("rate_limiter", RateLimiter)


LIMITED_PREFIXES = ("/api/", "/sapi/")
"""The request-weight limit covers the public APIs (as Binance's); the operator API and the
Prometheus endpoint are not client traffic and are never refused for it (a scrape from the
same address as a busy client must not fail)."""


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(LIMITED_PREFIXES):
        return await handler(request)
    limiter = request.app[LIMITER]
    weight = getattr(request.match_info.handler, WEIGHT_ATTR, 1)
    if callable(weight):
        weight = weight(request)
    used = limiter.spend_weight(request.remote or "", weight)
    headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
    try:
        response = await handler(request)
    except ApiError as err:
        err.headers = {**headers, **request.get(_ORDER_HEADERS, {}), **err.headers}
        raise
    if not response.prepared:  # a WebSocket has sent its headers already
        response.headers.update(headers)
        response.headers.update(request.get(_ORDER_HEADERS, {}))
    return response


# --- signed requests ------------------------------------------------------------------------


def _rejected_key() -> ApiError:
    return ApiError(REJECTED_MBX_KEY, "Invalid API-key, IP, or permissions for action.", 401)


@dataclass(frozen=True)
class ApiKeyRequest:
    """A request that named a valid API key (no signature): USER_STREAM endpoints."""

    user_id: int
    account: int
    key_id: int
    permissions: frozenset[str]
    frozen: bool


@dataclass(frozen=True)
class SignedRequest:
    """A verified SIGNED request."""

    user_id: int
    account: int
    key_id: int
    permissions: frozenset[str]
    params: dict[str, str]
    """Every parameter except ``signature``, ``timestamp`` and ``recvWindow``."""
    timestamp: int
    recv_window: int
    sent_count: int
    """How many parameters were sent, these three included (for ``-1104``)."""


def _key_credentials(request: web.Request) -> KeyCredentials:
    api_key = request.headers.get(API_KEY_HEADER, "")
    if not API_KEY_FORMAT.match(api_key):
        raise ApiError(BAD_API_KEY_FMT, "API-key format invalid.", 401)
    found = request.app[ACCOUNTS].credentials(api_key)
    if found is None or not found.key.allows_ip(request.remote):
        raise _rejected_key()
    return found


def api_key_only(request: web.Request) -> ApiKeyRequest:
    """The API key of a request that needs only the key (``X-MBX-APIKEY``, no signature):
    -2014 / -2015 as :func:`authenticate`."""
    found = _key_credentials(request)
    return ApiKeyRequest(
        user_id=found.user.id,
        account=found.user.account,
        key_id=found.key.id,
        permissions=found.key.permissions,
        frozen=found.user.frozen,
    )


def form_pairs(raw: str) -> Iterator[tuple[str, str, str]]:
    """``(name, value, pair)`` for each ``name=value`` pair of a query string or urlencoded
    body, in order, empty pairs skipped; -1100 for a pair that does not decode as UTF-8."""
    for pair in raw.split("&") if raw else ():
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        try:
            name = unquote_plus(raw_name, errors="strict")
            value = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise ApiError(ILLEGAL_CHARS, "Illegal characters found in a parameter.") from None
        yield name, value, pair


def unread_parameters(read: int, sent: int) -> ApiError:
    """Binance's -1104 for a request that sent parameters the endpoint does not read."""
    return ApiError(
        UNREAD_PARAMETERS,
        f"Not all sent parameters were read; read '{read}' parameter(s) but was sent '{sent}'.",
    )


def read_only(signed: SignedRequest, names: Iterable[str]) -> None:
    """-1104 unless every parameter of ``signed`` is one of ``names``."""
    unknown = set(signed.params).difference(names)
    if unknown:
        raise unread_parameters(signed.sent_count - len(unknown), signed.sent_count)


def _split(raw: str, params: dict[str, str]) -> tuple[list[str], str | None]:
    """Add ``raw``'s parameters to ``params``; its pairs without ``signature``, and the
    signature if it is here."""
    kept: list[str] = []
    signature: str | None = None
    for name, value, pair in form_pairs(raw):
        if name in params or (name == "signature" and signature is not None):
            raise ApiError(TOO_MANY_PARAMETERS, "Duplicate values for a parameter detected.")
        if name == "signature":
            signature = value
        else:
            params[name] = value
            kept.append(pair)
    return kept, signature


def _number(params: dict[str, str], name: str) -> int | None:
    text = params.pop(name, None)
    if text is None:
        return None
    if not text:
        raise mandatory(name)
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise illegal(name, NUMBER_RANGE)
    return int(text)


def _verify_signature(found: KeyCredentials, payload: bytes, signature: str) -> bool:
    if found.hmac_secret is not None:
        expected = hmac.new(found.hmac_secret, payload, hashlib.sha256).hexdigest()
        given = signature.lower().encode("ascii", "replace")
        return hmac.compare_digest(expected.encode(), given)
    assert found.ed25519 is not None
    try:
        raw_signature = base64.b64decode(signature.encode("ascii", "replace"), validate=True)
        found.ed25519.verify(raw_signature, payload)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


async def authenticate(request: web.Request, permission: str) -> SignedRequest:
    """Verify a SIGNED request (see the module docstring) for ``permission`` (``read``,
    ``trade`` or ``withdraw``)."""
    found = _key_credentials(request)
    raw_query = request.rel_url.raw_query_string
    try:
        raw_body = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(ILLEGAL_CHARS, "Illegal characters found in a parameter.") from None
    params: dict[str, str] = {}
    query_pairs, query_signature = _split(raw_query, params)
    body_pairs, body_signature = _split(raw_body, params)
    if query_signature is not None and body_signature is not None:
        raise ApiError(TOO_MANY_PARAMETERS, "Duplicate values for a parameter detected.")
    signature = query_signature if query_signature is not None else body_signature
    sent_count = len(params) + (signature is not None)
    timestamp = _number(params, "timestamp")
    if timestamp is None:
        raise mandatory("timestamp")
    if not signature:
        raise mandatory("signature")
    recv_window = _number(params, "recvWindow")
    if recv_window is None:
        recv_window = RECV_WINDOW_DEFAULT
    if recv_window > RECV_WINDOW_MAX:
        raise ApiError(BAD_RECV_WINDOW, f"recvWindow must be less than {RECV_WINDOW_MAX}.")
    now = request.app[ACCOUNTS].clock_ms()
    if timestamp >= now + AHEAD_TOLERANCE_MS:
        raise ApiError(
            INVALID_TIMESTAMP,
            f"Timestamp for this request was {AHEAD_TOLERANCE_MS}ms ahead of the server's time.",
        )
    if now - timestamp > recv_window:
        raise ApiError(
            INVALID_TIMESTAMP, "Timestamp for this request is outside of the recvWindow."
        )
    payload = ("&".join(query_pairs) + "&".join(body_pairs)).encode()
    if not _verify_signature(found, payload, signature):
        raise ApiError(INVALID_SIGNATURE, "Signature for this request is not valid.")
    if permission not in found.key.permissions:
        raise _rejected_key()
    if found.user.frozen and permission != "read":
        raise _rejected_key()
    if getattr(request.match_info.handler, ORDERS_ATTR, False):
        request[_ORDER_HEADERS] = request.app[LIMITER].count_order(found.key.id)
    return SignedRequest(
        user_id=found.user.id,
        account=found.user.account,
        key_id=found.key.id,
        permissions=found.key.permissions,
        params=params,
        timestamp=timestamp,
        recv_window=recv_window,
        sent_count=sent_count,
    )


def setup(app: web.Application, exchange: Exchange) -> None:
    """The accounts service (server key from the data directory or the environment) and the
    rate limiter, whose middleware covers every route."""
    box = SecretBox.load(exchange.config.server.data_dir)
    app[ACCOUNTS] = Accounts(exchange.db, exchange.bridge, exchange.node, box)
    app[LIMITER] = RateLimiter(exchange.config.limits)
    app.middlewares.append(rate_limit_middleware)


__all__ = [
    "ACCOUNTS",
    "LIMITER",
    "ApiKeyRequest",
    "RateLimiter",
    "SignedRequest",
    "api_key_only",
    "authenticate",
    "weighted",
]
