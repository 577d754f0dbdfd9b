"""Step registries and the scenario runner shared by the Gherkin suites.

A :class:`StepRegistry` maps regular expressions to step functions. Each step's text must
match exactly one registered pattern (``re.fullmatch``): an undefined or ambiguous step fails
the test rather than being skipped. :func:`run_case` runs a case's steps in order on a fresh
world and calls the world's ``check`` after every step (the engine's invariant check).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from tests.scenarios.gherkin import Case, Step, Table


class World(Protocol):
    """What the runner needs from a suite's per-scenario state."""

    def check(self) -> None:
        """Assert everything that must hold between any two steps."""


W = TypeVar("W", bound=World)
StepFn = Callable[[W, re.Match[str], Table | None], None]


class UndefinedStep(AssertionError):
    """No registered pattern matches a step, or more than one does."""


class StepRegistry(Generic[W]):
    """Step patterns of one suite."""

    def __init__(self) -> None:
        self._steps: list[tuple[re.Pattern[str], StepFn[W]]] = []

    def step(self, pattern: str) -> Callable[[StepFn[W]], StepFn[W]]:
        """Register the decorated function for steps whose whole text matches ``pattern``."""
        compiled = re.compile(pattern)

        def register(fn: StepFn[W]) -> StepFn[W]:
            self._steps.append((compiled, fn))
            return fn

        return register

    def run(self, world: W, step: Step) -> None:
        """Run one step on the world."""
        found = [(m, fn) for p, fn in self._steps if (m := p.fullmatch(step.text)) is not None]
        if len(found) != 1:
            what = "no step definition" if not found else f"{len(found)} step definitions"
            raise UndefinedStep(f"{what} for {step.keyword} {step.text!r}")
        match, fn = found[0]
        fn(world, match, step.table)


def run_case(case: Case, registry: StepRegistry[W], world: W) -> None:
    """Run every step of a case, checking the world after each one.

    A failure is re-raised with a note naming the feature file, line and step.
    """
    world.check()
    for step in case.steps:
        try:
            registry.run(world, step)
            world.check()
        except Exception as exc:
            exc.add_note(f"at {case.feature.path.name}:{step.line}: {step.keyword} {step.text}")
            raise
