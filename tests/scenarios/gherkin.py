"""A small Gherkin parser: enough of the language for the scenario files we replay.

Supported: ``Feature``, ``Background``, ``Scenario``/``Example``, ``Scenario Outline``/
``Scenario Template`` with ``Examples``/``Scenarios`` tables, ``@tags`` (on features,
scenarios and examples), free-text descriptions under any of those headers, ``#`` comments,
steps (``Given``/``When``/``Then``/``And``/``But``/``*``) with data tables (``\\|``, ``\\\\`` and
``\\n`` escapes inside cells) or ``\"\"\"`` doc strings. Rules (``Rule:``) and other languages
are not.

:func:`parse_feature` gives the syntax tree; :func:`expand` turns it into runnable
:class:`Case` objects — one per scenario and one per ``Examples`` row of an outline — with
the background's steps prepended and ``<placeholders>`` substituted in step text, tables and
doc strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

Table = list[list[str]]

STEP_KEYWORDS = ("Given", "When", "Then", "And", "But", "*")
_PLACEHOLDER = re.compile(r"<([^<>]+)>")


class GherkinError(ValueError):
    """The text is not Gherkin this parser understands; the message gives file and line."""


@dataclass(frozen=True)
class Step:
    """One step as written, plus the Given/When/Then kind an ``And``/``But`` inherits."""

    keyword: str
    kind: str
    text: str
    line: int
    table: Table | None = None
    doc_string: str | None = None


@dataclass
class Examples:
    """An outline's examples: a header row and data rows."""

    name: str
    tags: list[str]
    line: int
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Scenario:
    """A scenario or scenario outline."""

    name: str
    tags: list[str]
    line: int
    outline: bool
    steps: list[Step] = field(default_factory=list)
    examples: list[Examples] = field(default_factory=list)


@dataclass
class Feature:
    """A parsed feature file."""

    name: str
    path: Path
    tags: list[str] = field(default_factory=list)
    background: list[Step] = field(default_factory=list)
    scenarios: list[Scenario] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """One runnable scenario: background + scenario steps, placeholders filled in."""

    id: str
    feature: Feature
    name: str
    tags: tuple[str, ...]
    steps: tuple[Step, ...]
    params: dict[str, str]
    line: int


def _split_row(line: str, where: str) -> list[str]:
    """The cells of one ``| a | b |`` table row, trimmed and unescaped."""
    if not (line.startswith("|") and line.endswith("|")) or len(line) < 2:
        raise GherkinError(f"{where}: a table row must start and end with '|': {line!r}")
    cells: list[str] = []
    current: list[str] = []
    i = 1
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            current.append({"|": "|", "\\": "\\", "n": "\n"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        if ch == "|":
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    return cells


def _keyword(line: str, keywords: tuple[str, ...]) -> tuple[str, str] | None:
    """``(keyword, rest)`` if the line starts with ``keyword:`` for one of the keywords."""
    for kw in keywords:
        if line.startswith(kw + ":"):
            return kw, line[len(kw) + 1 :].strip()
    return None


def parse_feature(text: str, path: Path) -> Feature:
    """Parse one feature file's text. Raises :class:`GherkinError` on anything unexpected."""
    feature: Feature | None = None
    pending_tags: list[str] = []
    # Where steps and table rows go: the background, a scenario, or an examples block.
    steps: list[Step] | None = None
    examples: Examples | None = None
    in_description = False
    last_kind = ""
    doc_lines: list[str] | None = None
    doc_step: Step | None = None
    doc_indent = 0
    doc_delim = ""

    lines = text.splitlines()
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        line = raw.strip()
        if doc_lines is not None:
            assert doc_step is not None
            assert steps is not None
            if line == doc_delim:
                doc = "\n".join(doc_lines)
                steps[-1] = Step(
                    doc_step.keyword,
                    doc_step.kind,
                    doc_step.text,
                    doc_step.line,
                    doc_step.table,
                    doc,
                )
                doc_lines, doc_step = None, None
            else:
                stripped = len(raw) - len(raw.lstrip())
                doc_lines.append(raw[min(stripped, doc_indent) :])
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            pending_tags.extend(tok for tok in line.split() if tok.startswith("@"))
            continue

        if (kw := _keyword(line, ("Feature",))) is not None:
            if feature is not None:
                raise GherkinError(f"{where}: a second Feature")
            feature = Feature(name=kw[1], path=path, tags=pending_tags)
            pending_tags, in_description = [], True
            continue
        if feature is None:
            raise GherkinError(f"{where}: expected 'Feature:' first, got {line!r}")

        if _keyword(line, ("Background",)) is not None:
            if feature.scenarios or feature.background:
                raise GherkinError(f"{where}: Background must come once, before scenarios")
            steps, examples, in_description, last_kind = feature.background, None, True, ""
            continue
        if (kw := _keyword(line, ("Scenario Outline", "Scenario Template"))) is not None or (
            kw := _keyword(line, ("Scenario", "Example"))
        ) is not None:
            outline = kw[0] in ("Scenario Outline", "Scenario Template")
            scenario = Scenario(name=kw[1], tags=pending_tags, line=number, outline=outline)
            feature.scenarios.append(scenario)
            steps, examples, pending_tags = scenario.steps, None, []
            in_description, last_kind = True, ""
            continue
        if (kw := _keyword(line, ("Examples", "Scenarios"))) is not None:
            if not feature.scenarios or not feature.scenarios[-1].outline:
                raise GherkinError(f"{where}: Examples outside a Scenario Outline")
            examples = Examples(name=kw[1], tags=pending_tags, line=number)
            feature.scenarios[-1].examples.append(examples)
            steps, pending_tags, in_description = None, [], True
            continue

        if line.startswith("|"):
            row = _split_row(line, where)
            if examples is not None:
                if not examples.header:
                    examples.header = row
                elif len(row) != len(examples.header):
                    raise GherkinError(
                        f"{where}: row has {len(row)} cells, header has {len(examples.header)}"
                    )
                else:
                    examples.rows.append(row)
            elif steps:
                last = steps[-1]
                table = [*(last.table or []), row]
                if len(row) != len(table[0]):
                    raise GherkinError(
                        f"{where}: row has {len(row)} cells, the table's first "
                        f"row has {len(table[0])}"
                    )
                steps[-1] = Step(
                    last.keyword, last.kind, last.text, last.line, table, last.doc_string
                )
            else:
                raise GherkinError(f"{where}: a table row with no step or Examples before it")
            in_description = False
            continue

        if line.startswith(('"""', "```")):
            if not steps:
                raise GherkinError(f"{where}: a doc string with no step before it")
            doc_delim, doc_lines, doc_step = line[:3], [], steps[-1]
            doc_indent = len(raw) - len(raw.lstrip())
            continue

        word = line.split(maxsplit=1)[0]
        if word in STEP_KEYWORDS:
            if steps is None:
                raise GherkinError(f"{where}: a step outside a Background or Scenario")
            text = line[len(word) :].strip()
            if word in ("Given", "When", "Then"):
                kind = word
            elif last_kind:
                kind = last_kind
            else:
                raise GherkinError(f"{where}: {word!r} cannot start a scenario's steps")
            last_kind = kind
            steps.append(Step(keyword=word, kind=kind, text=text, line=number))
            in_description = False
            continue

        if in_description:
            continue  # Free text under a Feature/Background/Scenario/Examples header.
        raise GherkinError(f"{where}: cannot parse {line!r}")

    if doc_lines is not None:
        raise GherkinError(f"{path}: unterminated doc string")
    if feature is None:
        raise GherkinError(f"{path}: no Feature")
    for scenario in feature.scenarios:
        if scenario.outline and not any(ex.rows for ex in scenario.examples):
            raise GherkinError(
                f"{path}:{scenario.line}: outline {scenario.name!r} has no Examples rows"
            )
    return feature


def load_feature(path: Path) -> Feature:
    """Read and parse a feature file."""
    return parse_feature(path.read_text(encoding="utf-8"), path)


def _substitute(text: str, params: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: params.get(m.group(1), m.group(0)), text)


def _fill(step: Step, params: dict[str, str]) -> Step:
    if not params:
        return step
    table = None
    if step.table is not None:
        table = [[_substitute(cell, params) for cell in row] for row in step.table]
    doc = None if step.doc_string is None else _substitute(step.doc_string, params)
    return Step(step.keyword, step.kind, _substitute(step.text, params), step.line, table, doc)


def slug(text: str) -> str:
    """Lower-case words joined by ``-``: a readable test id fragment."""
    return re.sub(r"[^a-z0-9_.]+", "-", text.lower()).strip("-.") or "unnamed"


def expand(feature: Feature) -> list[Case]:
    """Every runnable case of a feature, in file order, with unique ids.

    A case id is ``<file stem>:<scenario slug>``, and for an outline row
    ``...:<value of the first Examples column>``.
    """
    cases: list[Case] = []
    seen: set[str] = set()
    stem = feature.path.stem

    def add(case_id: str, scenario: Scenario, tags: list[str], params: dict[str, str]) -> None:
        unique, n = case_id, 2
        while unique in seen:
            unique, n = f"{case_id}#{n}", n + 1
        seen.add(unique)
        steps = tuple(_fill(s, params) for s in (*feature.background, *scenario.steps))
        cases.append(
            Case(
                id=unique,
                feature=feature,
                name=_substitute(scenario.name, params),
                tags=tuple(dict.fromkeys([*feature.tags, *scenario.tags, *tags])),
                steps=steps,
                params=params,
                line=scenario.line,
            )
        )

    for scenario in feature.scenarios:
        base = f"{stem}:{slug(scenario.name)}"
        if not scenario.outline:
            add(base, scenario, [], {})
            continue
        for ex in scenario.examples:
            for row in ex.rows:
                params = dict(zip(ex.header, row, strict=True))
                add(f"{base}:{row[0] or 'empty'}", scenario, ex.tags, params)
    return cases


def load_cases(directory: Path) -> list[Case]:
    """Every case of every ``*.feature`` file in a directory, files in name order."""
    paths = sorted(directory.glob("*.feature"))
    assert paths, f"no feature files in {directory}"
    return [case for path in paths for case in expand(load_feature(path))]
