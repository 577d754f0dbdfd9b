"""exchange-core's Gherkin scenarios (``scenarios/exchange-core/*.feature``), one test each.

The step definitions and the symbol/unit mapping are in :mod:`tests.scenarios.exchange_core`.
"""

from __future__ import annotations

import pytest

from tests.scenarios import scenarios_dir
from tests.scenarios.exchange_core import ExchangeCoreWorld, registry
from tests.scenarios.gherkin import Case, load_cases
from tests.scenarios.steps import run_case

SUBDIR = "exchange-core"


def _params() -> list[object]:
    root = scenarios_dir()
    if root is None:
        reason = "shared scenario data not found; set BOURSE_DATA_DIR"
        return [pytest.param(None, id="no-data", marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(case, id=case.id) for case in load_cases(root / SUBDIR)]


CASES = _params()


@pytest.mark.parametrize("case", CASES)
def test_scenario(case: Case | None) -> None:
    assert case is not None
    run_case(case, registry, ExchangeCoreWorld())


def test_every_scenario_is_collected() -> None:
    """2 outline rows + 1 scenario in basic.feature, 2 scenarios in risk.feature."""
    if scenarios_dir() is None:
        pytest.skip("shared scenario data not found")
    assert len(CASES) == 5
