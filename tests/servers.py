"""The config every in-process ``bourse serve`` of the test suite starts from.

A temporary data directory, free ports (0), ``write`` durability (an acknowledgement waits
for the journal's write, not its fsync: fast, still journaled), small books, no timed
snapshots, and a demo market maker that requotes every 100 ms. A test changes what it needs
with ``sections``: each table is merged key by key over these defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controlplane.config import ServerConfig, load_config

NODE = {
    "durability": "write",
    "order_capacity": 4096,
    "levels_per_side": 256,
    "snapshot_every_secs": 0,
}


def server_config(data_dir: Path, **sections: Mapping[str, Any]) -> ServerConfig:
    """A test server's config (see the module docstring); e.g.
    ``server_config(tmp, demo={"quote_interval_ms": 500}, limits={"orders_per_10s": 5})``."""
    tables: dict[str, dict[str, Any]] = {
        "server": {"data_dir": str(data_dir)},
        "http": {"port": 0},
        "gateway": {"listen": "127.0.0.1:0"},
        "node": dict(NODE),
        "demo": {"quote_interval_ms": 100},
    }
    for name, table in sections.items():
        tables.setdefault(name, {}).update(table)
    return load_config(None, env={}, overrides=tables)
