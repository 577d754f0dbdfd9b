"""Generate the dashboards from ops/queries.toml, their single source of truth.

Writes ``ops/consoles/<id>.html`` (Prometheus console templates, rendered by Prometheus
itself with prom.lib and ops/console_libraries/bourse.lib), ``ops/console_libraries/
bourse_menu.lib`` (the left-hand menu listing those consoles) and ``ops/grafana/bourse.json``
(one Grafana dashboard, a row per console, the same queries). ``--check`` writes nothing and
exits 1 naming every file that differs from what it would write (tests/test_ops.py runs it).

Invariants: every ``expr`` of queries.toml appears in the outputs, and nothing else does
(tests/test_ops.py extracts them back and compares); an ``expr`` never contains a backtick
(consoles quote PromQL as Go raw strings) nor ``{{`` (Go template delimiters). Output is
deterministic (stable order, sorted JSON keys), so ``--check`` is an exact comparison.
Time and memory are linear in the number of panels. Standard library only (Python 3.11+).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPS = Path(__file__).resolve().parent
QUERIES = OPS / "queries.toml"
CONSOLES = OPS / "consoles"
MENU_LIB = OPS / "console_libraries" / "bourse_menu.lib"
GRAFANA = OPS / "grafana" / "bourse.json"

UNITS = ("rate", "seconds", "bytes", "ratio", "count", "seq")
GRAFANA_UNITS = {
    "rate": "suffix:/s",
    "seconds": "s",
    "bytes": "bytes",
    "ratio": "percentunit",
    "count": "short",
    "seq": "none",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Series:
    expr: str
    legend: str


@dataclass(frozen=True)
class Stat:
    title: str
    expr: str
    unit: str


@dataclass(frozen=True)
class Graph:
    title: str
    unit: str
    series: tuple[Series, ...]


@dataclass(frozen=True)
class Column:
    title: str
    expr: str
    unit: str


@dataclass(frozen=True)
class Table:
    title: str
    label: str
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Dashboard:
    id: str
    title: str
    intro: str
    stats: tuple[Stat, ...]
    graphs: tuple[Graph, ...]
    tables: tuple[Table, ...]


class QueriesError(ValueError):
    """queries.toml is malformed."""


def _expr(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise QueriesError(f"{where}: expr must be a non-empty string")
    if "`" in value or "{{" in value or "}}" in value:
        raise QueriesError(f"{where}: expr must not contain a backtick, '{{{{' or '}}}}'")
    return value


def _unit(value: Any, where: str) -> str:
    if value not in UNITS:
        raise QueriesError(f"{where}: unit must be one of {', '.join(UNITS)}, not {value!r}")
    return str(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise QueriesError(f"{where} must be a non-empty string")
    return value


def load(path: Path = QUERIES) -> list[Dashboard]:
    """The dashboards of queries.toml, validated."""
    raw = tomllib.loads(path.read_text())
    dashboards = []
    for d in raw.get("dashboard", []):
        where = f"dashboard {d.get('id')!r}"
        stats = tuple(
            Stat(
                _text(s.get("title"), f"{where} stat title"),
                _expr(s.get("expr"), f"{where} stat {s.get('title')!r}"),
                _unit(s.get("unit"), f"{where} stat {s.get('title')!r}"),
            )
            for s in d.get("stat", [])
        )
        graphs = tuple(
            Graph(
                _text(g.get("title"), f"{where} graph title"),
                _unit(g.get("unit"), f"{where} graph {g.get('title')!r}"),
                tuple(
                    Series(
                        _expr(s.get("expr"), f"{where} graph {g.get('title')!r}"),
                        _text(s.get("legend"), f"{where} graph {g.get('title')!r} legend"),
                    )
                    for s in g.get("series", [])
                ),
            )
            for g in d.get("graph", [])
        )
        tables = tuple(
            Table(
                _text(t.get("title"), f"{where} table title"),
                _text(t.get("label"), f"{where} table {t.get('title')!r} label"),
                tuple(
                    Column(
                        _text(c.get("title"), f"{where} table column title"),
                        _expr(c.get("expr"), f"{where} table {t.get('title')!r}"),
                        _unit(c.get("unit"), f"{where} table {t.get('title')!r}"),
                    )
                    for c in t.get("columns", [])
                ),
            )
            for t in d.get("table", [])
        )
        if any(not g.series for g in graphs) or any(not t.columns for t in tables):
            raise QueriesError(f"{where}: a graph without series or a table without columns")
        dashboards.append(
            Dashboard(
                _text(d.get("id"), "dashboard id"),
                _text(d.get("title"), f"{where} title"),
                _text(d.get("intro"), f"{where} intro"),
                stats,
                graphs,
                tables,
            )
        )
    if not dashboards:
        raise QueriesError(f"{path}: no [[dashboard]]")
    return dashboards


def all_exprs(dashboards: list[Dashboard]) -> set[str]:
    """Every distinct PromQL expression of the dashboards."""
    exprs: set[str] = set()
    for d in dashboards:
        exprs.update(s.expr for s in d.stats)
        exprs.update(s.expr for g in d.graphs for s in g.series)
        exprs.update(c.expr for t in d.tables for c in t.columns)
    return exprs


# Consoles --------------------------------------------------------------------------------


def _console_stat(stat: Stat) -> str:
    return (
        f'<tr><td>{html.escape(stat.title)}</td><td class="text-right">'
        f'{{{{ template "prom_query_drilldown" (args `{stat.expr}` "" "bourse_{stat.unit}") }}}}'
        "</td></tr>"
    )


def _console_graph(dashboard: Dashboard, index: int, graph: Graph) -> str:
    node = f"graph-{dashboard.id}-{index}"
    panel = {
        "title": graph.title,
        "unit": graph.unit,
        "expr": [s.expr for s in graph.series],
        "name": [s.legend for s in graph.series],
    }
    return (
        f'<div class="bourse_graph"><h3>{html.escape(graph.title)}</h3>'
        f'<div id="{node}"></div></div>\n'
        f"<script>new PromConsole.Graph(bourseGraph({json.dumps(node)}, "
        f"{json.dumps(panel, sort_keys=True)}));</script>"
    )


def _console_table(index: int, table: Table) -> str:
    label = table.label
    var = f"$table{index}_column"
    lines = [f"<h2>{html.escape(table.title)}</h2>"]
    for i, column in enumerate(table.columns):
        lines.append(f"{{{{ {var}{i} := query `{column.expr}` }}}}")
    header = "".join(f"<th>{html.escape(c.title)}</th>" for c in table.columns)
    lines.append('<table class="table table-sm table-striped table-bordered bourse_table">')
    lines.append(f"<tr><th>{html.escape(label)}</th>{header}</tr>")
    lines.append(f'{{{{ range $row := {var}0 | sortByLabel "{label}" }}}}')
    cells = [f"<td>{{{{ $row.Labels.{label} }}}}</td>"]
    for i, column in enumerate(table.columns):
        cells.append(
            f'<td class="text-right">{{{{ range {var}{i} }}}}'
            f"{{{{ if eq .Labels.{label} $row.Labels.{label} }}}}"
            f'{{{{ tmpl "bourse_{column.unit}" .Value }}}}{{{{ end }}}}{{{{ end }}}}</td>'
        )
    lines.append(f"<tr>{''.join(cells)}</tr>")
    lines.append(f'{{{{ else }}}}<tr><td colspan="{len(table.columns) + 1}">No data.</td></tr>')
    lines.append("{{ end }}")
    lines.append("</table>")
    return "\n".join(lines)


def console(dashboard: Dashboard) -> str:
    """The console template of one dashboard."""
    parts = [
        f"{{{{/* Generated by ops/generate.py from ops/queries.toml ({dashboard.id}): "
        "edit those, not this. */}}",
        f'{{{{ template "bourse_head" (args . "{dashboard.title}") }}}}',
        "",
        '{{ template "prom_right_table_head" }}',
        f'<tr><th colspan="2">{html.escape(dashboard.title)}</th></tr>',
        *(_console_stat(s) for s in dashboard.stats),
        '{{ template "prom_right_table_tail" }}',
        "",
        '{{ template "prom_content_head" . }}',
        f"<h1>Bourse · {html.escape(dashboard.title)}</h1>",
        f'<p class="bourse_intro">{html.escape(dashboard.intro)}</p>',
        *(_console_graph(dashboard, i, g) for i, g in enumerate(dashboard.graphs)),
        *(_console_table(i, t) for i, t in enumerate(dashboard.tables)),
        '{{ template "prom_content_tail" . }}',
        '{{ template "tail" }}',
        "",
    ]
    return "\n".join(parts)


def menu_lib(dashboards: list[Dashboard]) -> str:
    """The console library giving the "menu" template (one item per dashboard)."""
    items = "\n".join(
        f'{{{{ template "bourse_menu_item" (args . "{d.id}.html" "{d.title}") }}}}'
        for d in dashboards
    )
    return (
        "{{/* Generated by ops/generate.py from ops/queries.toml: edit those, not this. */}}\n"
        '{{ define "menu" }}\n'
        '<div class="prom_lhs_menu row">\n'
        '<nav class="col-md-2 md-block bg-dark sidebar prom_lhs_menu_nav">\n'
        '<div class="sidebar-sticky">\n'
        '<ul class="nav flex-column">\n'
        f"{items}\n"
        "</ul>\n</div>\n</nav>\n</div>\n"
        "{{ end }}\n"
    )


# Grafana ---------------------------------------------------------------------------------


def _grafana_legend(legend: str) -> str:
    return legend.replace("[[", "{{").replace("]]", "}}")


def _target(ref: str, expr: str, **extra: Any) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "refId": ref, **extra}


def _refs() -> list[str]:
    return [chr(ord("A") + i) for i in range(26)]


def grafana(dashboards: list[Dashboard]) -> dict[str, Any]:
    """One Grafana dashboard: a row per console, the same panels and queries."""
    panels: list[dict[str, Any]] = []
    y = 0

    def add(panel: dict[str, Any], x: int, w: int, h: int) -> None:
        panel["id"] = len(panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        panels.append(panel)

    for d in dashboards:
        add({"type": "row", "title": d.title, "collapsed": False, "panels": []}, 0, 24, 1)
        y += 1
        for i, stat in enumerate(d.stats):
            if i and i % 6 == 0:
                y += 4
            add(
                {
                    "type": "stat",
                    "title": stat.title,
                    "datasource": DATASOURCE,
                    "targets": [_target("A", stat.expr, instant=True)],
                    "fieldConfig": {
                        "defaults": {"unit": GRAFANA_UNITS[stat.unit]},
                        "overrides": [],
                    },
                    "options": {
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value",
                        "graphMode": "none",
                        "textMode": "value",
                    },
                },
                (i % 6) * 4,
                4,
                4,
            )
        y += 4
        for i, graph in enumerate(d.graphs):
            if i and i % 2 == 0:
                y += 8
            add(
                {
                    "type": "timeseries",
                    "title": graph.title,
                    "datasource": DATASOURCE,
                    "targets": [
                        _target(ref, s.expr, legendFormat=_grafana_legend(s.legend))
                        for ref, s in zip(_refs(), graph.series, strict=False)
                    ],
                    "fieldConfig": {
                        "defaults": {"unit": GRAFANA_UNITS[graph.unit], "min": 0},
                        "overrides": [],
                    },
                    "options": {
                        "legend": {
                            "displayMode": "list",
                            "placement": "bottom",
                            "showLegend": True,
                        },
                        "tooltip": {"mode": "multi", "sort": "none"},
                    },
                },
                (i % 2) * 12,
                12,
                8,
            )
        y += 8
        for table in d.tables:
            refs = _refs()
            add(
                {
                    "type": "table",
                    "title": table.title,
                    "datasource": DATASOURCE,
                    "targets": [
                        _target(ref, c.expr, format="table", instant=True)
                        for ref, c in zip(refs, table.columns, strict=False)
                    ],
                    "transformations": [
                        {"id": "merge", "options": {}},
                        {
                            "id": "organize",
                            "options": {
                                "excludeByName": {
                                    "Time": True,
                                    "__name__": True,
                                    "instance": True,
                                    "job": True,
                                },
                                "renameByName": {
                                    f"Value #{ref}": c.title
                                    for ref, c in zip(refs, table.columns, strict=False)
                                },
                            },
                        },
                    ],
                    "fieldConfig": {
                        "defaults": {},
                        "overrides": [
                            {
                                "matcher": {"id": "byName", "options": c.title},
                                "properties": [{"id": "unit", "value": GRAFANA_UNITS[c.unit]}],
                            }
                            for c in table.columns
                        ],
                    },
                    "options": {"showHeader": True},
                },
                0,
                24,
                8,
            )
            y += 8
    return {
        "title": "Bourse",
        "uid": "bourse",
        "description": "Generated by ops/generate.py from ops/queries.toml.",
        "tags": ["bourse"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "timezone": "utc",
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                }
            ]
        },
        "panels": panels,
    }


# Main ------------------------------------------------------------------------------------


def outputs(dashboards: list[Dashboard]) -> dict[Path, str]:
    """Every generated file and its content."""
    files = {CONSOLES / f"{d.id}.html": console(d) for d in dashboards}
    files[MENU_LIB] = menu_lib(dashboards)
    files[GRAFANA] = json.dumps(grafana(dashboards), indent=2, sort_keys=True) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    files = outputs(load())
    if args.check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        for path in stale:
            print(f"stale: {path.relative_to(OPS.parent)} (run python3 ops/generate.py)")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(OPS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
