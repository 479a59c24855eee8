#!/usr/bin/env python3
"""Write the parameter table of the chart README from the `# --` comments of its values.yaml.

The chart: deploy/helm/pcf-api.

A stand-in for helm-docs (not packaged for Debian): every key preceded by a `# -- text` comment
(continued on the following comment lines) becomes a row with its path, type and default.
The table goes between the `<!-- parameters:start -->` and `<!-- parameters:end -->` markers.

    scripts/helm-readme.py            rewrite the README
    scripts/helm-readme.py --check    exit 1 if the README is not up to date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "pcf-api"
START, END = "<!-- parameters:start -->", "<!-- parameters:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?: |$)")
DOC = re.compile(r"^(?P<indent> *)# -- ?(?P<text>.*)$")
COMMENT = re.compile(r"^(?P<indent> *)#(?P<text>.*)$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted path, description) for each documented key, in file order."""
    rows: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    pending_indent = -1
    for line in text.splitlines():
        doc = DOC.match(line)
        if doc:
            pending, pending_indent = [doc["text"].strip()], len(doc["indent"])
            continue
        comment = COMMENT.match(line)
        if comment:
            if pending is not None and len(comment["indent"]) == pending_indent:
                pending.append(comment["text"].strip())
            continue
        key = KEY.match(line)
        if key:
            indent = len(key["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key["key"]))
            if pending is not None:
                rows.append((".".join(name for _, name in stack), " ".join(pending)))
        if line.strip():
            pending = None
    return rows


def lookup(values: Any, path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def type_of(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}[
        type(value)
    ]


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for path, description in documented_keys(values_text):
        value = lookup(values, path)
        default = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        lines.append(f"| `{path}` | {type_of(value)} | `{cell(default)}` | {cell(description)} |")
    return "\n".join(lines)


def render(readme: str, values_text: str) -> str:
    head, sep, rest = readme.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"README lacks the {START} / {END} markers")
    return f"{head}{START}\n{table(values_text)}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when outdated")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args()
    readme_path = args.chart / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    wanted = render(readme, (args.chart / "values.yaml").read_text(encoding="utf-8"))
    if args.check:
        if wanted != readme:
            print(f"{readme_path} is out of date: run scripts/helm-readme.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
