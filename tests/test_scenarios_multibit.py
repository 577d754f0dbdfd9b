"""MultiBitExchange's Gherkin scenarios (``scenarios/MultiBitExchange/*.feature``), one test
per scenario and per outline row.

The step definitions and the market mapping are in :mod:`tests.scenarios.multibit`.
"""

from __future__ import annotations

import pytest

from tests.scenarios import scenarios_dir
from tests.scenarios.gherkin import Case, load_cases
from tests.scenarios.multibit import MultiBitWorld, registry
from tests.scenarios.steps import run_case

SUBDIR = "MultiBitExchange"


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
    run_case(case, registry, MultiBitWorld())


def test_every_scenario_is_collected() -> None:
    """Quote: 3 scenarios + 12 + 12 + 4 + 5 outline rows; limit orders: 5; market orders: 4."""
    if scenarios_dir() is None:
        pytest.skip("shared scenario data not found")
    assert len(CASES) == 45
