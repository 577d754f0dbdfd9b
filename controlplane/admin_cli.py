"""``bourse admin``: the operator API (:mod:`controlplane.api.admin`) from the command line.

    bourse admin [--url URL] [--token T] [--data-dir D] [--json] COMMAND
        health | audit [--limit N]
        assets list | assets add NAME --decimals D [--id N]
        markets list | markets add SYMBOL --base B --quote Q --price-decimals P
                                          --tick-size T --lot-size L --min-notional M [--id N]
        markets halt|resume|delist SYMBOL
        fee-tier set TIER --maker-bps M --taker-bps T
        users create USERNAME [--password-stdin] | users get ID
        users freeze|unfreeze ID | users tier ID TIER | users fee-tier ID TIER
        users keys create ID [--permissions read,trade] [--label L]
        deposit ASSET AMOUNT --tx-id TX (--user ID | --account N)
        withdrawals list [--status S[,S]] [--user ID] | withdrawals approve ID
        withdrawals reject ID [--reason TEXT]
        ledger USER [--asset A] [--limit N]
        operator add NAME [--role admin|auditor] [--password-stdin] [--data-dir D]   (offline)

The URL defaults to ``$BOURSE_ADMIN_URL`` or ``http://127.0.0.1:8080``. The token is, in
order: ``--token``, ``$BOURSE_ADMIN_TOKEN``, the demo operator's token in
``<data-dir>/demo-keys.json`` (``--data-dir`` defaults to ``data/bourse``, the server's
default). Amounts, tick and lot sizes are decimal strings (``"0.01"``), as the API takes.

Output is a human-readable table (lists) or ``key: value`` lines (one object); ``--json``
prints the API's JSON as it came. An API error is printed on stderr as
``bourse: error: HTTP <status> <code>: <msg>`` with exit status 1.

``operator add`` is the only offline command: it writes the operator straight into
``<data-dir>/controlplane.sqlite3`` (the server may be running) and prints its password (a
random one unless ``--password-stdin``) and a token, once. It is how the first operator of a
deployment is made.

Talks HTTP with the standard library (``urllib``); each command is one request.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import quote, urlencode

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_DATA_DIR = Path("data/bourse")
TIMEOUT_S = 30.0

Request: TypeAlias = tuple[str, str, Any]
"""``(method, path under /admin/v1, JSON body or None)``."""
Builder: TypeAlias = Callable[[argparse.Namespace], Request]
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# Columns shown by the table view (the rest is in --json).
COLUMNS: dict[str, list[str]] = {
    "assets": ["id", "name", "decimals"],
    "markets": [
        "id",
        "symbol",
        "base",
        "quote",
        "status",
        "price_decimals",
        "tick_size",
        "lot_size",
        "min_notional",
    ],
    "withdrawals": [
        "id",
        "user_id",
        "asset",
        "amount",
        "address",
        "status",
        "approvals",
        "approvals_required",
        "tx_id",
        "info",
    ],
    "ledger": ["id", "seq", "time", "asset", "delta", "reason", "ref", "free", "held"],
    "audit": ["id", "time", "operator", "action", "target", "outcome"],
}


class AdminError(Exception):
    """Anything that stops a command (printed as ``bourse: error: …``)."""


class Client:
    """One operator API endpoint with a token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/admin/v1{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            try:
                error = json.loads(err.read())
                detail = f"{error['code']}: {error['msg']}"
            except (ValueError, KeyError, TypeError):
                detail = err.reason
            raise AdminError(f"HTTP {err.code} {detail}") from None
        except urllib.error.URLError as err:
            raise AdminError(f"cannot reach {self.url}: {err.reason}") from None


def resolve_token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    from_env = os.environ.get("BOURSE_ADMIN_TOKEN")
    if from_env:
        return from_env
    from controlplane.demo import DEMO_OPERATOR, KEYS_FILE

    path = Path(args.data_dir or DEFAULT_DATA_DIR) / KEYS_FILE
    try:
        entry = json.loads(path.read_text()).get(DEMO_OPERATOR)
    except (OSError, ValueError):
        entry = None
    if isinstance(entry, dict) and isinstance(entry.get("token"), str):
        return str(entry["token"])
    raise AdminError(
        f"no operator token: pass --token, set BOURSE_ADMIN_TOKEN, or point --data-dir at a "
        f"demo data directory (no demo operator token in {path})"
    )


# --- output ---------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render(data: Any, columns: Sequence[str] | None = None) -> str:
    """A list of objects as an aligned table; one object as ``key: value`` lines."""
    if isinstance(data, list):
        if not data:
            return "(none)"
        keys = list(columns) if columns else list(data[0])
        rows = [[_cell(item.get(k)) for k in keys] for item in data]
        widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
        lines = ["  ".join(k.upper().ljust(w) for k, w in zip(keys, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(line.rstrip() for line in lines)
    if isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in data.items())
    return _cell(data)


# --- the commands ---------------------------------------------------------------------------


def _command(
    sub: SubParsers, name: str, help: str, build: Builder, table: str | None = None
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(handler=_run, build=build, table=table)
    return p


def _group(sub: SubParsers, name: str, help: str) -> SubParsers:
    p = sub.add_parser(name, help=help, description=help)
    return p.add_subparsers(title="commands", metavar="COMMAND", required=True)


def _path(text: str) -> str:
    return quote(text, safe="")


def _add_assets(sub: SubParsers) -> None:
    g = _group(sub, "assets", "List or add assets.")
    _command(g, "list", "List the listed assets.", lambda a: ("GET", "/assets", None), "assets")
    p = _command(
        g,
        "add",
        "List a new asset (ListAsset).",
        lambda a: (
            "POST",
            "/assets",
            {"name": a.name, "decimals": a.decimals, **({"id": a.id} if a.id else {})},
        ),
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--decimals", type=int, required=True)
    p.add_argument("--id", type=int, help="asset id (default: the next free one)")


def _add_markets(sub: SubParsers) -> None:
    g = _group(sub, "markets", "List, add, halt, resume or delist markets.")
    _command(g, "list", "List markets.", lambda a: ("GET", "/markets", None), "markets")

    def add(a: argparse.Namespace) -> Request:
        body = {
            "symbol": a.symbol,
            "base": a.base,
            "quote": a.quote,
            "price_decimals": a.price_decimals,
            "tick_size": a.tick_size,
            "lot_size": a.lot_size,
            "min_notional": a.min_notional,
        }
        if a.id:
            body["id"] = a.id
        return "POST", "/markets", body

    p = _command(g, "add", "List a new market (ListMarket); sizes are decimal strings.", add)
    p.add_argument("symbol", metavar="SYMBOL")
    p.add_argument("--base", required=True)
    p.add_argument("--quote", required=True)
    p.add_argument("--price-decimals", type=int, required=True)
    p.add_argument("--tick-size", required=True, help="in the quote asset, e.g. 0.01")
    p.add_argument("--lot-size", required=True, help="in the base asset, e.g. 0.001")
    p.add_argument("--min-notional", required=True, help="in the quote asset, e.g. 5")
    p.add_argument("--id", type=int, help="market id (default: the next free one)")
    for action in ("halt", "resume", "delist"):

        def status(a: argparse.Namespace, action: str = action) -> Request:
            return "POST", f"/markets/{_path(a.symbol)}/{action}", None

        _command(g, action, f"{action.capitalize()} a market.", status).add_argument("symbol")


def _add_fee_tier(sub: SubParsers) -> None:
    g = _group(sub, "fee-tier", "Define fee tiers.")
    p = _command(
        g,
        "set",
        "Define or change a fee tier (SetFeeTier).",
        lambda a: (
            "PUT",
            f"/fee-tiers/{a.tier}",
            {"maker_bps": a.maker_bps, "taker_bps": a.taker_bps},
        ),
    )
    p.add_argument("tier", type=int)
    p.add_argument("--maker-bps", type=int, required=True)
    p.add_argument("--taker-bps", type=int, required=True)


def _add_users(sub: SubParsers) -> None:
    g = _group(sub, "users", "Create and manage users.")

    def create(a: argparse.Namespace) -> Request:
        if a.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = secrets.token_urlsafe(18)
            print(f"password (shown once): {password}", file=sys.stderr)
        return "POST", "/users", {"username": a.username, "password": password}

    p = _command(g, "create", "Create a user and its engine account.", create)
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _command(g, "get", "Show a user.", lambda a: ("GET", f"/users/{a.user}", None)).add_argument(
        "user", type=int
    )
    for action in ("freeze", "unfreeze"):

        def freeze(a: argparse.Namespace, action: str = action) -> Request:
            return "POST", f"/users/{a.user}/{action}", None

        _command(g, action, f"{action.capitalize()} a user.", freeze).add_argument("user", type=int)
    p = _command(
        g,
        "tier",
        "Set a user's verification tier (0, 1, 2).",
        lambda a: ("PUT", f"/users/{a.user}/tier", {"tier": a.tier}),
    )
    p.add_argument("user", type=int)
    p.add_argument("tier", type=int)
    p = _command(
        g,
        "fee-tier",
        "Move a user's account to a fee tier.",
        lambda a: ("PUT", f"/users/{a.user}/fee-tier", {"fee_tier": a.fee_tier}),
    )
    p.add_argument("user", type=int)
    p.add_argument("fee_tier", type=int, metavar="TIER")
    keys = _group(g, "keys", "API keys of a user.")
    p = _command(
        keys,
        "create",
        "Issue an HMAC API key (read/trade only); prints its secret once.",
        lambda a: (
            "POST",
            f"/users/{a.user}/api-keys",
            {"permissions": a.permissions.split(","), "label": a.label},
        ),
    )
    p.add_argument("user", type=int)
    p.add_argument("--permissions", default="read,trade")
    p.add_argument("--label", default="operator-issued")


def _add_deposit(sub: SubParsers) -> None:
    def deposit(a: argparse.Namespace) -> Request:
        body: dict[str, Any] = {"asset": a.asset, "amount": a.amount, "tx_id": a.tx_id}
        if (a.user is None) == (a.account is None):
            raise AdminError("deposit: give exactly one of --user and --account")
        body["user_id" if a.user is not None else "account"] = (
            a.user if a.user is not None else a.account
        )
        return "POST", "/deposits", body

    p = _command(
        sub, "deposit", "Credit a (simulated) chain deposit, idempotent by --tx-id.", deposit
    )
    p.add_argument("asset")
    p.add_argument("amount", help="decimal string, e.g. 1.5")
    p.add_argument("--tx-id", required=True)
    p.add_argument("--user", type=int)
    p.add_argument("--account", type=int)


def _add_withdrawals(sub: SubParsers) -> None:
    g = _group(sub, "withdrawals", "List, approve or reject withdrawals.")

    def listing(a: argparse.Namespace) -> Request:
        query = {k: v for k, v in (("status", a.status), ("user_id", a.user)) if v is not None}
        return "GET", "/withdrawals" + (f"?{urlencode(query)}" if query else ""), None

    p = _command(g, "list", "List withdrawals, newest first.", listing, "withdrawals")
    p.add_argument("--status", help="e.g. PENDING_APPROVAL or SENT,REJECTED")
    p.add_argument("--user", type=int)
    _command(
        g,
        "approve",
        "Approve a pending withdrawal (N distinct operators send it).",
        lambda a: ("POST", f"/withdrawals/{a.id}/approve", None),
    ).add_argument("id", type=int)
    p = _command(
        g,
        "reject",
        "Reject a pending withdrawal (the amount is paid back).",
        lambda a: ("POST", f"/withdrawals/{a.id}/reject", {"reason": a.reason}),
    )
    p.add_argument("id", type=int)
    p.add_argument("--reason", default="")


def _add_ledger(sub: SubParsers) -> None:
    def ledger(a: argparse.Namespace) -> Request:
        query: dict[str, Any] = {"limit": a.limit}
        if a.asset:
            query["asset"] = a.asset
        return "GET", f"/users/{a.user}/ledger?{urlencode(query)}", None

    p = _command(sub, "ledger", "A user's balance changes (oldest first).", ledger, "ledger")
    p.add_argument("user", type=int)
    p.add_argument("--asset")
    p.add_argument("--limit", type=int, default=500)


def _operator_add(args: argparse.Namespace) -> int:
    from controlplane.operators import OperatorError, add_operator_offline

    data_dir = Path(args.op_data_dir or args.data_dir or DEFAULT_DATA_DIR)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = secrets.token_urlsafe(18)
    try:
        operator, token = add_operator_offline(data_dir, args.name, password, args.role)
    except OperatorError as err:
        print(f"bourse: error: {err}", file=sys.stderr)
        return 1
    out = {"operator": operator.name, "role": operator.role, "token": token}
    if not args.password_stdin:
        out["password"] = password
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"operator {operator.name} ({operator.role}) added to {data_dir}")
        if not args.password_stdin:
            print(f"password (shown once): {password}")
        print(f"token (shown once):    {token}")
    return 0


def _add_operator(sub: SubParsers) -> None:
    g = _group(sub, "operator", "Operators (offline: writes the database directly).")
    help = "Create an operator in the data directory's database; prints a token once."
    p = g.add_parser("add", help=help, description=help)
    p.add_argument("name")
    p.add_argument("--role", choices=("admin", "auditor"), default="admin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--data-dir", dest="op_data_dir", type=Path, metavar="D")
    p.set_defaults(handler=_operator_add)


def _run(args: argparse.Namespace) -> int:
    try:
        method, path, body = args.build(args)
        client = Client(args.url, resolve_token(args))
        data = client.call(method, path, body)
    except AdminError as err:
        print(f"bourse: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data, COLUMNS.get(args.table or "")))
    return 0


def add_admin(subparsers: SubParsers) -> None:
    """Register ``bourse admin`` (see the module docstring)."""
    help = "Operate the exchange through the operator API (/admin/v1)."
    p = subparsers.add_parser("admin", help=help, description=help)
    p.add_argument("--url", default=os.environ.get("BOURSE_ADMIN_URL", DEFAULT_URL))
    p.add_argument("--token", help="operator token (default: $BOURSE_ADMIN_TOKEN, the demo's)")
    p.add_argument("--data-dir", type=Path, metavar="D", help="for the demo operator's token")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    sub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _command(
        sub,
        "health",
        "Node, feed, gateway, projections and database health.",
        lambda a: ("GET", "/health", None),
    )
    p_audit = _command(
        sub,
        "audit",
        "The operators' audit trail, newest first.",
        lambda a: ("GET", f"/audit?limit={a.limit}", None),
        "audit",
    )
    p_audit.add_argument("--limit", type=int, default=50)
    _add_assets(sub)
    _add_markets(sub)
    _add_fee_tier(sub)
    _add_users(sub)
    _add_deposit(sub)
    _add_withdrawals(sub)
    _add_ledger(sub)
    _add_operator(sub)
