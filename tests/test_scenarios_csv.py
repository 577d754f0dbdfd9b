"""The csv-matching scenarios (``scenarios/csv-matching``): 16 scenarios, each on a fresh
engine; the output of the odd-numbered ones is compared line by line with the expected file.

Parsing, the engine mapping and the output rules are in :mod:`tests.scenarios.csv_matching`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenarios import scenarios_dir
from tests.scenarios.csv_matching import Line, Scenario, parse_input, parse_output, run
from tests.scenarios.gherkin import slug

SUBDIR = "csv-matching"


def _dir() -> Path | None:
    root = scenarios_dir()
    return None if root is None else root / SUBDIR


def _params() -> list[object]:
    directory = _dir()
    if directory is None:
        reason = "shared scenario data not found; set BOURSE_DATA_DIR"
        return [pytest.param(None, id="no-data", marks=pytest.mark.skip(reason=reason))]
    return [
        pytest.param(s, id=f"scenario-{s.number:02d}-{slug(s.description)}")
        for s in parse_input(directory / "inputFile.csv")
    ]


CASES = _params()


def _expected() -> dict[str, list[Line]]:
    directory = _dir()
    assert directory is not None
    return parse_output(directory / "output_file.csv")


@pytest.mark.parametrize("scenario", CASES)
def test_scenario(scenario: Scenario | None) -> None:
    assert scenario is not None
    assert scenario.name == f"scenario {scenario.number}"
    replay = run(scenario)
    assert replay.tob_checks > 0, "every scenario states its top of book"
    expected = _expected()
    if scenario.number % 2 == 1:
        assert replay.output == expected[scenario.name]
    else:
        assert scenario.name not in expected
        assert replay.output, "every command prints at least its acknowledgement"


def test_scenario_files_line_up() -> None:
    """16 input scenarios; expected output for exactly the odd-numbered ones."""
    if _dir() is None:
        pytest.skip("shared scenario data not found")
    assert len(CASES) == 16
    assert sorted(_expected()) == sorted(f"scenario {n}" for n in range(1, 17, 2))
