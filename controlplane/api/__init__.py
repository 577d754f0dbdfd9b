"""The HTTP API (Binance Spot API v3 shape) as one aiohttp application.

:class:`Exchange` is what every part of the API shares: the node, the database, the listing,
the command bridge and the event feed. Each API module has ``setup(app, exchange)``, which
adds its routes, creates its service (kept under its own ``web.AppKey``), subscribes its
consumers to the feed and registers its start/stop work; :func:`make_app` runs them in the
order of ``_modules()`` — ``metrics`` (its middleware outermost), ``public``, ``market``,
``streams``, ``auth``, ``users``, ``trading``, ``userstream``, ``wallet``, ``admin`` — and a
module may use the services of the modules before it. Middleware order, outermost first:
metrics, :func:`~controlplane.api.errors.error_middleware`, the rate limiter of
:mod:`controlplane.api.auth`. Request bodies over :data:`MAX_BODY_BYTES` are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from controlplane import Node
from controlplane.api.errors import error_middleware, redact_malformed_request_logs
from controlplane.bridge import EngineBridge, EventFeed
from controlplane.config import ServerConfig
from controlplane.db import Database
from controlplane.listing import Listing

MAX_BODY_BYTES = 64 * 1024
"""Larger request bodies are refused (413, ``-1101``) before a handler reads them."""


@dataclass
class Exchange:
    """The running exchange, as the API modules see it."""

    config: ServerConfig
    node: Node
    db: Database
    listing: Listing
    bridge: EngineBridge
    feed: EventFeed

    async def caught_up(self) -> None:
        """Wait until the event feed (and so the projections) has passed every command the
        node has applied, whichever door it came through."""
        await self.feed.wait_for(self.node.stats()["applied_seq"])


EXCHANGE = web.AppKey("exchange", Exchange)

Setup = Callable[[web.Application, Exchange], None]


def _modules() -> list[Setup]:
    from controlplane import metrics
    from controlplane.api import (
        admin,
        auth,
        market,
        public,
        streams,
        trading,
        users,
        userstream,
        wallet,
    )

    # metrics first: its HTTP middleware goes outermost and sees every request.
    return [
        metrics.setup,
        public.setup,
        market.setup,
        streams.setup,
        auth.setup,
        users.setup,
        trading.setup,
        userstream.setup,
        wallet.setup,
        admin.setup,
    ]


def make_app(exchange: Exchange) -> web.Application:
    redact_malformed_request_logs()
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[EXCHANGE] = exchange
    for setup in _modules():
        setup(app, exchange)
    return app
