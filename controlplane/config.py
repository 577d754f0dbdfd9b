"""The server config of ``bourse serve``: msgspec Structs, loaded from TOML, environment and flags.

Precedence, lowest first: the defaults below, the TOML file (``--config PATH``, else
``./bourse.toml`` if it exists), the environment, the command-line flags. Every table and
key is typed and unknown ones are rejected, with the path of the offending value.

The file has seven tables, all optional::

    [server]   data_dir = "data/bourse"
    [http]     host = "127.0.0.1"   port = 8080   metrics_token (optional)
    [gateway]  listen = "127.0.0.1:7001"
    [node]     durability, segment_bytes, preallocate_segments, snapshot_every_commands,
               snapshot_every_secs,
               keep_snapshots, ring_capacity, wait, cores, pipeline, order_capacity,
               levels_per_side, event_window   (the node's config; see NodeConfig)
    [demo]     enabled = true   quote_interval_ms = 500
    [limits]   request_weight_per_minute = 6000   orders_per_10s = 100
               orders_per_day = 200000   (Binance's REQUEST_WEIGHT and ORDERS limits)
    [funding]  approvals_required = 2   address_cooldown_s = 0
               approval_threshold = {BTC = "1", ..., "*" = "1000"}
               daily_withdrawal_limits = {"0" = {BTC = "0.1", ..., "*" = "0"}, "1" = ..., "2" = ...}
               (withdrawals: controlplane.funding)

Environment overrides are ``BOURSE_<SECTION>_<KEY>`` in upper case for every key of those
tables, e.g. ``BOURSE_SERVER_DATA_DIR``, ``BOURSE_HTTP_HOST``, ``BOURSE_HTTP_PORT``,
``BOURSE_GATEWAY_LISTEN``, ``BOURSE_NODE_DURABILITY``, ``BOURSE_NODE_SNAPSHOT_EVERY_SECS``,
``BOURSE_DEMO_ENABLED``, ``BOURSE_DEMO_QUOTE_INTERVAL_MS``,
``BOURSE_LIMITS_REQUEST_WEIGHT_PER_MINUTE``. A value is read as the key's
type (``8080``, ``true``/``false``); the table-valued ``node`` keys ``wait`` and ``cores``
take JSON (``BOURSE_NODE_CORES='{"engine": 2}'``) or, for ``wait``, a plain name. A
variable with one of these section prefixes and an unknown key is an error (a typo must not
be ignored); other ``BOURSE_*`` variables are not config.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import msgspec

from controlplane.engine_types import NodeConfig

DEFAULT_CONFIG_FILE = Path("bourse.toml")
ENV_PREFIX = "BOURSE_"


class ConfigError(Exception):
    """A config file, variable or flag that is unreadable, of the wrong type or unknown."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerSection(_Section):
    data_dir: str = "data/bourse"
    """The node's journal and snapshots, and ``demo-keys.json``."""


class HttpSection(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    """0 picks a free port (printed on start)."""
    metrics_token: Annotated[str, msgspec.Meta(min_length=16, pattern=r"^[!-~]+$")] | None = None
    """If set, ``GET /metrics`` answers only ``Authorization: Bearer <metrics_token>``
    (at least 16 printable characters; Prometheus: ``authorization: {credentials: ...}``);
    unset, it is open to whoever reaches the port."""


class GatewaySection(_Section):
    listen: str = "127.0.0.1:7001"
    """The binary gateway's ``host:port`` (port 0 picks a free one)."""


class NodeSection(_Section):
    """``NodeConfig`` without ``data_dir`` (that is ``server.data_dir``); None = the node's
    default."""

    durability: Literal["fsync", "write", "none"] | None = None
    segment_bytes: int | None = None
    preallocate_segments: bool | None = None
    snapshot_every_commands: int | None = None
    snapshot_every_secs: int | None = None
    keep_snapshots: int | None = None
    ring_capacity: int | None = None
    wait: Literal["busy_spin", "yield"] | dict[str, dict[str, int]] | None = None
    cores: dict[str, int | None] | None = None
    pipeline: Literal["threads", "single"] | None = None
    order_capacity: int | None = None
    levels_per_side: int | None = None
    event_window: int | None = None


class DemoSection(_Section):
    enabled: bool = True
    """On a fresh data directory: list BTCUSDT/ETHUSDT, create the demo accounts; always:
    run the demo market maker."""
    quote_interval_ms: int = 500
    """How often the demo market maker moves its quotes (each move is ~40 gateway
    requests: below 50 ms it runs into the gateway's default throttle of 1000/s)."""


class LimitsSection(_Section):
    """The HTTP API's rate limits (``controlplane.api.auth``), listed in exchangeInfo's
    ``rateLimits``."""

    request_weight_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 6000
    """REQUEST_WEIGHT per IP address per minute (Binance's default 6000)."""
    orders_per_10s: Annotated[int, msgspec.Meta(ge=1)] = 100
    """ORDERS per API key per 10 seconds."""
    orders_per_day: Annotated[int, msgspec.Meta(ge=1)] = 200_000
    """ORDERS per API key per day (UTC)."""


DECIMAL_TEXT = r"^\d{1,20}(\.\d{0,18})?$"
VERIFICATION_TIERS = ("0", "1", "2")
AmountTable = dict[str, Annotated[str, msgspec.Meta(pattern=DECIMAL_TEXT)]]
"""Amounts per asset name as decimal strings in whole units; ``"*"``: any other asset."""


def _default_thresholds() -> AmountTable:
    return {"BTC": "1", "ETH": "20", "USDT": "20000", "*": "1000"}


def _default_daily_limits() -> dict[str, AmountTable]:
    return {
        "0": {"BTC": "0.1", "ETH": "2", "USDT": "2000", "*": "0"},
        "1": {"BTC": "10", "ETH": "200", "USDT": "200000", "*": "1000"},
        "2": {"BTC": "100", "ETH": "2000", "USDT": "2000000", "*": "100000"},
    }


class FundingSection(_Section):
    """Withdrawal rules (``controlplane.funding``). Amounts are per asset, in whole units of
    that asset, as decimal strings; the ``"*"`` entry applies to every asset not named (no
    entry at all: 0)."""

    approvals_required: Annotated[int, msgspec.Meta(ge=1, le=16)] = 2
    """Distinct operators who must approve a withdrawal above the threshold (N of M)."""
    approval_threshold: AmountTable = msgspec.field(default_factory=_default_thresholds)
    """A withdrawal of more than this needs approval; at most this is sent at once."""
    daily_withdrawal_limits: dict[str, AmountTable] = msgspec.field(
        default_factory=_default_daily_limits
    )
    """Per verification tier ("0", "1", "2"): the most a user may withdraw of an asset in any
    24 hours (rejected withdrawals do not count)."""
    address_cooldown_s: Annotated[int, msgspec.Meta(ge=0)] = 0
    """How long a newly whitelisted withdrawal address waits before it can be used."""

    def __post_init__(self) -> None:
        unknown = set(self.daily_withdrawal_limits) - set(VERIFICATION_TIERS)
        if unknown:
            raise ValueError(
                f"daily_withdrawal_limits: unknown tier(s) {sorted(unknown)}; tiers are "
                f"{', '.join(VERIFICATION_TIERS)}"
            )


class ServerConfig(_Section):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    http: HttpSection = msgspec.field(default_factory=HttpSection)
    gateway: GatewaySection = msgspec.field(default_factory=GatewaySection)
    node: NodeSection = msgspec.field(default_factory=NodeSection)
    demo: DemoSection = msgspec.field(default_factory=DemoSection)
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    funding: FundingSection = msgspec.field(default_factory=FundingSection)

    def node_config(self) -> NodeConfig:
        """The dict for ``Node(...)``: ``data_dir`` plus every node key that is set."""
        config: dict[str, Any] = {"data_dir": self.server.data_dir}
        for key, value in msgspec.structs.asdict(self.node).items():
            if value is not None:
                config[key] = value
        return cast(NodeConfig, config)


SECTIONS: dict[str, type[_Section]] = {
    "server": ServerSection,
    "http": HttpSection,
    "gateway": GatewaySection,
    "node": NodeSection,
    "demo": DemoSection,
    "limits": LimitsSection,
    "funding": FundingSection,
}


def env_names() -> list[str]:
    """Every environment variable the config reads."""
    return [
        f"{ENV_PREFIX}{section.upper()}_{field.name.upper()}"
        for section, cls in SECTIONS.items()
        for field in msgspec.structs.fields(cls)
    ]


def _env_value(name: str, text: str, annotation: Any) -> Any:
    try:
        return msgspec.convert(text, annotation, strict=False)
    except msgspec.ValidationError as err:
        first: msgspec.MsgspecError = err
    try:  # a table (``cores``, ``wait``) as JSON
        return msgspec.json.decode(text, type=annotation)
    except msgspec.ValidationError as err:
        first = err
    except msgspec.DecodeError:
        pass
    raise ConfigError(f"environment variable {name}={text!r}: {first}")


def env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The ``BOURSE_<SECTION>_<KEY>`` variables as nested tables, typed."""
    out: dict[str, dict[str, Any]] = {}
    for name, text in sorted(env.items()):
        for section, cls in SECTIONS.items():
            prefix = f"{ENV_PREFIX}{section.upper()}_"
            if not name.startswith(prefix):
                continue
            key = name[len(prefix) :].lower()
            fields = {f.name: f for f in msgspec.structs.fields(cls)}
            if key not in fields:
                known = ", ".join(f"{prefix}{f.upper()}" for f in fields)
                raise ConfigError(f"unknown environment variable {name} (known: {known})")
            out.setdefault(section, {})[key] = _env_value(name, text, fields[key].type)
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    """Merge tables key by key (a ``[node]`` key from the env keeps the file's others)."""
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ServerConfig:
    """Defaults < the TOML file < ``env`` (default ``os.environ``) < ``overrides`` (the flags,
    as ``{section: {key: value}}``; None values are skipped). ``path`` None: ``./bourse.toml``
    if it exists. Raises ConfigError with the offending file/variable and key."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        source = str(path)
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror}") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"invalid TOML in {path}: {err}") from err
    # Type-check the file on its own, so its errors name it.
    _convert(raw, source)
    _merge(raw, env_overrides(os.environ if env is None else env))
    if overrides:
        flags = {
            section: {key: value for key, value in table.items() if value is not None}
            for section, table in overrides.items()
        }
        _merge(raw, {section: table for section, table in flags.items() if table})
    return _convert(raw, f"{source} + environment + flags")


def _convert(raw: dict[str, Any], source: str) -> ServerConfig:
    try:
        return msgspec.convert(raw, ServerConfig, strict=True)
    except msgspec.ValidationError as err:
        raise ConfigError(f"invalid config ({source}): {err}") from err


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` → ``(host, port)``; ConfigError if it is not one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"invalid listen address {listen!r}: expected HOST:PORT")
    return host, int(port)
