"""Reading a Grafana dashboard as Grafana would: its panels, their queries, its template
variables, and the PromQL a query becomes once the variables are substituted."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Grafana's built-in interval variables, as Grafana would expand them for a short time range
# scraped every second (any valid duration will do: PromQL only needs a syntactically valid range).
BUILT_INS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(
    r"^\s*label_values\((?:(.*),\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S
)


@dataclass(frozen=True)
class Target:
    panel: str
    ref_id: str
    expr: str
    legend: str

    def __str__(self) -> str:
        return f"{self.panel!r} {self.ref_id}"


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: Mapping[str, Any]) -> list[Target]:
    return [
        Target(panel["title"], target["refId"], target["expr"], target.get("legendFormat", ""))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard.get("templating", {}).get("list", []))


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, Mapping):
        return str(query.get("query", ""))
    return str(query or variable.get("definition", ""))


def label_values(query: str) -> tuple[str | None, str]:
    """``label_values(selector, label)`` → (selector or None, label)."""
    found = _LABEL_VALUES.match(query)
    assert found is not None, f"not a label_values() query: {query!r}"
    selector, label = found.groups()
    return (selector.strip() if selector else None), label


def regex_of(values: list[str]) -> str:
    """A multi-value variable as Grafana writes it into a Prometheus regex: regex
    metacharacters escaped for the regex, and that backslash escaped for the PromQL string."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}'])", r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with ``$name``, ``${name}``, ``${name:fmt}`` and ``[[name]]`` replaced from
    ``values`` and the built-in interval variables; an unknown variable is an error."""
    known = {**BUILT_INS, **values}

    def replace(found: re.Match[str]) -> str:
        name = next(group for group in found.groups() if group)
        assert name in known, f"unknown dashboard variable ${name} in {expr!r}"
        return known[name]

    result = _VARIABLE.sub(replace, expr)
    assert "$" not in result, f"unsubstituted variable left in {result!r}"
    return result
