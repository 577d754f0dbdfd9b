"""Binance-shaped errors: every failure of the HTTP API is ``{"code": <int>, "msg": <str>}``
with Binance's code and HTTP status (Binance Spot API v3, "Error codes").

Handlers raise :class:`ApiError` (or use the helpers below); :func:`error_middleware` turns
it into the response, and also turns aiohttp's own errors (unknown path, wrong method,
oversized body) and anything unexpected into the same shape: an unexpected exception is
logged with its traceback and answered ``-1000`` / 500 without details. No handler path
changes state before its checks pass, so an error response means nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("bourse.http")

# The codes this API uses (names as in Binance's documentation).
UNKNOWN = -1000
DISCONNECTED = -1001
UNAUTHORIZED = -1002
TOO_MANY_REQUESTS = -1003
UNEXPECTED_RESP = -1006
TIMEOUT = -1007
SERVER_BUSY = -1008
UNKNOWN_ORDER_COMPOSITION = -1014
UNSUPPORTED_OPERATION = -1020
TOO_MANY_ORDERS = -1015
INVALID_TIMESTAMP = -1021
INVALID_SIGNATURE = -1022
ILLEGAL_CHARS = -1100
TOO_MANY_PARAMETERS = -1101
MANDATORY_PARAM_EMPTY_OR_MALFORMED = -1102
UNKNOWN_PARAM = -1103
UNREAD_PARAMETERS = -1104
PARAM_EMPTY = -1105
PARAM_NOT_REQUIRED = -1106
BAD_PRECISION = -1111
INVALID_TIF = -1115
INVALID_ORDER_TYPE = -1116
INVALID_SIDE = -1117
EMPTY_NEW_CL_ORD_ID = -1118
BAD_INTERVAL = -1120
BAD_SYMBOL = -1121
INVALID_LISTEN_KEY = -1125
INVALID_PARAMETER = -1130
BAD_RECV_WINDOW = -1131
NEW_ORDER_REJECTED = -2010
CANCEL_REJECTED = -2011
NO_SUCH_ORDER = -2013
BAD_API_KEY_FMT = -2014
REJECTED_MBX_KEY = -2015
FILTER_FAILURE = -1013


class ApiError(Exception):
    """An error answered as ``{"code", "msg"}`` with an HTTP status (default 400), plus
    optional headers (e.g. ``Retry-After`` on 429)."""

    def __init__(
        self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response(
            {"code": self.code, "msg": self.msg}, status=self.status, headers=self.headers
        )


def mandatory(name: str) -> ApiError:
    return ApiError(
        MANDATORY_PARAM_EMPTY_OR_MALFORMED,
        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
    )


def illegal(name: str, legal: str) -> ApiError:
    return ApiError(
        ILLEGAL_CHARS, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'."
    )


def bad_symbol() -> ApiError:
    return ApiError(BAD_SYMBOL, "Invalid symbol.")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MalformedRequestRedaction(logging.Filter):
    """aiohttp logs a request its parser refuses (a control character in a header, an
    over-long line) at ERROR with the parse error, which quotes the offending line: an
    ``Authorization`` header with its token, a path with a listen key. This filter keeps the
    record (that a malformed request came, and from where) as a WARNING — it is the
    client's error, answered 400, not the server's — and drops the quote."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            said = record.getMessage()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = None
            record.exc_text = None
            record.msg = "%s; malformed HTTP request refused (%s, status %s)"
            record.args = (said, type(error).__name__, error.code)
        return True


_REDACTION = MalformedRequestRedaction()


def redact_malformed_request_logs() -> None:
    """Install :class:`MalformedRequestRedaction` on aiohttp's server logger (idempotent)."""
    server_log = logging.getLogger("aiohttp.server")
    if _REDACTION not in server_log.filters:
        server_log.addFilter(_REDACTION)


_HTTP_CODES = {
    404: (UNSUPPORTED_OPERATION, "This operation is not supported: no such endpoint."),
    405: (UNSUPPORTED_OPERATION, "This operation is not supported: method not allowed here."),
    413: (TOO_MANY_PARAMETERS, "Request body too large."),
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return err.response()
    except web.HTTPException as exc:
        if exc.status < 400 or exc.status in (101,):
            raise
        code, msg = _HTTP_CODES.get(exc.status, (UNKNOWN, exc.reason))
        return ApiError(code, msg, exc.status).response()
    except Exception:
        # The route's pattern, not the path: a path can carry a secret (a listen key).
        route = request.match_info.route.resource
        where = route.canonical if route is not None else "an unmatched path"
        log.exception("unexpected error on %s %s", request.method, where)
        return ApiError(
            UNKNOWN, "An unknown error occurred while processing the request.", 500
        ).response()
