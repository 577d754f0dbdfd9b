"""Bourse's Locust suite: market makers (binary gateway), API traders (signed REST) and
WebSocket subscribers, against a running ``bourse serve``. See ``loadtests/README.md``.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 \\
        --bourse-gateway 127.0.0.1:7001 --bourse-data-dir data/bourse
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from locust import events

# `locust -f loadtests/locustfile.py` from the repository root: make `loadtests` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.bourse_load.api_trader import ApiTraderUser
from loadtests.bourse_load.fixtures import add_options
from loadtests.bourse_load.market_maker import MarketMakerUser
from loadtests.bourse_load.subscriber import StreamSubscriberUser

__all__ = ["ApiTraderUser", "MarketMakerUser", "StreamSubscriberUser"]


def _options(parser: Any) -> None:
    add_options(parser)


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]
