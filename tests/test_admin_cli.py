"""``bourse admin`` (``controlplane.admin_cli``) through ``controlplane.cli.main`` against the
real server: tables and ``--json``, the token from the demo's keys file, ``--token`` and
``$BOURSE_ADMIN_TOKEN``, listing markets, a deposit, approving a withdrawal, errors, and the
offline ``operator add``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controlplane.api.auth import ACCOUNTS
from controlplane.cli import main
from controlplane.serve import Server, start
from tests.test_accounts import call, run
from tests.test_funding import ADDRESS, Clock, funding_of, setup_user
from tests.test_operators import config, signed

RULES = {"approvals_required": 1, "approval_threshold": {"*": "100"}}


async def bourse(
    capsys: pytest.CaptureFixture[str], server: Server | None, *argv: str
) -> tuple[int, str, str]:
    """Run ``bourse admin [--url …] [--data-dir …] ARGV`` on a worker thread (the server runs
    on this loop); ``(exit status, stdout, stderr)``."""
    prefix = ["admin"]
    if server is not None:
        prefix += ["--url", server.base_url, "--data-dir", server.config.server.data_dir]
    capsys.readouterr()
    status = await asyncio.to_thread(main, [*prefix, *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_admin_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "bourse"
    monkeypatch.delenv("BOURSE_ADMIN_TOKEN", raising=False)

    async def scenario() -> None:
        server = await start(config(data_dir, RULES))
        clock = Clock()
        server.runner.app[ACCOUNTS].clock_ms = clock
        try:
            # Tables by default; the token comes from the demo's keys file.
            status, out, _ = await bourse(capsys, server, "markets", "list")
            assert status == 0
            lines = out.splitlines()
            assert lines[0].split()[:3] == ["ID", "SYMBOL", "BASE"]
            assert [line.split()[1] for line in lines[1:]] == ["BTCUSDT", "ETHUSDT"]
            status, out, _ = await bourse(capsys, server, "--json", "markets", "list")
            assert [m["symbol"] for m in json.loads(out)] == ["BTCUSDT", "ETHUSDT"]
            status, out, _ = await bourse(capsys, server, "health")
            assert status == 0
            assert "operator" in out
            assert "demo-operator" in out

            # A user through the CLI, a deposit, the ledger.
            async with aiohttp.ClientSession() as http:
                session, user, totp, key = await setup_user(http, server, clock, "carol")
                uid = str(user["userId"])
                status, out, err = await bourse(
                    capsys, server, "deposit", "USDT", "250.5", "--tx-id", "cli-1", "--user", uid
                )
                assert status == 0, err
                assert "CREDITED" in out
                status, out, _ = await bourse(
                    capsys,
                    server,
                    "--json",
                    "deposit",
                    "USDT",
                    "250.5",
                    "--tx-id",
                    "cli-1",
                    "--user",
                    uid,
                )
                assert json.loads(out)["duplicate"] is True
                status, _, err = await bourse(
                    capsys, server, "deposit", "USDT", "1", "--tx-id", "cli-1", "--user", uid
                )
                assert status == 1
                assert "HTTP 409 -1130" in err
                status, out, _ = await bourse(capsys, server, "ledger", uid, "--asset", "USDT")
                assert "deposit" in out
                assert "250.50000000" in out
                status, out, _ = await bourse(capsys, server, "users", "tier", uid, "1")
                assert status == 0

                # A withdrawal above the threshold, approved through the CLI.
                status, _ = await call(
                    http,
                    server,
                    "POST",
                    "/api/v1/me/withdrawal-addresses",
                    json={"asset": "USDT", "address": ADDRESS, "totp": clock.next_code(totp)},
                    token=session,
                )
                assert status == 201
                status, applied = await signed(
                    http,
                    server,
                    "POST",
                    "/sapi/v1/capital/withdraw/apply",
                    key,
                    {"coin": "USDT", "address": ADDRESS, "amount": "200"},
                )
                assert status == 200, applied
            status, out, _ = await bourse(
                capsys, server, "withdrawals", "list", "--status", "PENDING_APPROVAL"
            )
            rows = out.splitlines()
            assert rows[0].split()[:2] == ["ID", "USER_ID"]
            assert [r.split()[0] for r in rows[1:]] == [applied["id"]]
            status, out, _ = await bourse(
                capsys, server, "--json", "withdrawals", "approve", applied["id"]
            )
            assert status == 0
            approved: dict[str, Any] = json.loads(out)
            assert (approved["status"], approved["approvals"]) == ("SENT", ["demo-operator"])
            assert funding_of(server).withdrawal(int(applied["id"])) is not None
            status, _, err = await bourse(capsys, server, "withdrawals", "approve", "424242")
            assert (status, "HTTP 404 -4029" in err) == (1, True)

            # The offline operator add, then its token by flag and by environment.
            status, out, _ = await bourse(
                capsys,
                None,
                "--json",
                "operator",
                "add",
                "night-shift",
                "--data-dir",
                str(data_dir),
            )
            assert status == 0
            created = json.loads(out)
            assert created["operator"] == "night-shift"
            assert created["token"].startswith("bop_")
            base = ["--url", server.base_url]
            status, out, _ = await bourse(
                capsys, None, *base, "--token", created["token"], "--json", "health"
            )
            assert (status, json.loads(out)["operator"]) == (0, "night-shift")
            monkeypatch.setenv("BOURSE_ADMIN_TOKEN", created["token"])
            status, out, _ = await bourse(capsys, None, *base, "--json", "audit")
            assert status == 0
            assert "withdrawals.approve" in [a["action"] for a in json.loads(out)]
            monkeypatch.delenv("BOURSE_ADMIN_TOKEN")
            status, _, err = await bourse(
                capsys, None, "operator", "add", "night-shift", "--data-dir", str(data_dir)
            )
            assert (status, "exists already" in err) == (1, True)
            status, _, err = await bourse(
                capsys, None, *base, "--token", "bop_wrong", "assets", "list"
            )
            assert (status, "HTTP 401 -1002" in err) == (1, True)
            status, _, err = await bourse(
                capsys, None, *base, "--data-dir", str(tmp_path / "none"), "assets", "list"
            )
            assert (status, "no operator token" in err) == (1, True)
        finally:
            await server.stop()

    run(scenario)
