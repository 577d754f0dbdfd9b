"""The small Gherkin parser used by the scenario suites (:mod:`tests.scenarios.gherkin`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenarios.gherkin import GherkinError, expand, parse_feature

FEATURE = """\
@core
Feature: Sample
  Free text describing the feature.

  Background:
    Given a book:
      | bid | price | ask |
      | 4   | 1550  |     |

  @one
  Scenario: plain
    Some description of the scenario.
    When a client places 1 at 2
    And a cell with \\| pipe:
      | a \\| b | c\\\\d |
    Then it "rests"
    But nothing trades

  Scenario Outline: outline <sym>
    When a client buys on <sym>
    Then the book is:
      | <price> | x |
    # a comment
  @slow
  Examples: first
    | sym     | price |
    | EUR_USD | 10    |
    | ETH_XBT | 20    |
"""


def test_parses_background_scenarios_and_outlines() -> None:
    feature = parse_feature(FEATURE, Path("sample.feature"))
    assert feature.name == "Sample"
    assert feature.tags == ["@core"]
    assert feature.background[0].table == [["bid", "price", "ask"], ["4", "1550", ""]]
    plain, outline = feature.scenarios
    assert [(s.keyword, s.kind) for s in plain.steps] == [
        ("When", "When"),
        ("And", "When"),
        ("Then", "Then"),
        ("But", "Then"),
    ]
    assert plain.steps[1].table == [["a | b", "c\\d"]]
    assert outline.outline
    assert outline.examples[0].header == ["sym", "price"]

    cases = expand(feature)
    assert [c.id for c in cases] == [
        "sample:plain",
        "sample:outline-sym:EUR_USD",
        "sample:outline-sym:ETH_XBT",
    ]
    assert cases[0].tags == ("@core", "@one")
    assert cases[1].tags == ("@core", "@slow")
    assert cases[2].name == "outline ETH_XBT"
    assert [s.text for s in cases[2].steps] == [
        "a book:",
        "a client buys on ETH_XBT",
        "the book is:",
    ]
    assert cases[2].steps[2].table == [["20", "x"]]
    assert cases[2].params == {"sym": "ETH_XBT", "price": "20"}


@pytest.mark.parametrize(
    "text",
    [
        "Given a step before any feature",
        "Feature: f\n  Given a step outside a scenario",
        "Feature: f\n  Scenario: s\n    And cannot come first",
        "Feature: f\n  Scenario: s\n    Given t\n      | a | b |\n      | c |",
        "Feature: f\n  Scenario Outline: s\n    Given <x>",
        "Feature: f\n  Scenario: s\n    Given t\n    stray text after steps",
        "Feature: f\n  Scenario: s\n    Given t\n      | not closed",
    ],
)
def test_rejects_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(GherkinError):
        parse_feature(text, Path("bad.feature"))


def test_doc_strings() -> None:
    text = (
        "Feature: f\n  Scenario: s\n    Given a doc:\n"
        '      """\n      line 1\n        line 2\n      """\n'
    )
    (case,) = expand(parse_feature(text, Path("d.feature")))
    assert case.steps[0].doc_string == "line 1\n  line 2"
