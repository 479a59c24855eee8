"""Check .trivyignore.yaml: every accepted vulnerability says why and until when.

    python3 scripts/trivyignore.py [.trivyignore.yaml]

Trivy honours an entry whatever it holds; this check makes each acceptance a decision with a
reason (``statement``) and a review date (``expired_at``, at most MAX_DAYS ahead, not past).
Exit 1 with one line per problem.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import yaml

MAX_DAYS = 180
SECTIONS = ("vulnerabilities", "misconfigurations", "secrets", "licenses")


def problems(document: Any, today: datetime.date) -> list[str]:
    """What is wrong with the parsed file; empty when every entry is complete and current."""
    if document is None:
        return []
    if not isinstance(document, dict):
        return ["the file must be a mapping of sections (vulnerabilities: [...])"]
    found = [f"unknown section {key!r}" for key in document if key not in SECTIONS]
    for section in SECTIONS:
        entries = document.get(section) or []
        if not isinstance(entries, list):
            found.append(f"{section}: must be a list")
            continue
        for index, entry in enumerate(entries):
            found.extend(f"{section}[{index}]: {problem}" for problem in _entry(entry, today))
    return found


def _entry(entry: Any, today: datetime.date) -> list[str]:
    if not isinstance(entry, dict) or not str(entry.get("id") or "").strip():
        return ["needs an id"]
    name = entry["id"]
    found = []
    statement = entry.get("statement")
    if not isinstance(statement, str) or not statement.strip():
        found.append(f"{name}: needs a statement (why it is accepted, who decided)")
    expiry = entry.get("expired_at")
    if isinstance(expiry, str):
        try:
            expiry = datetime.date.fromisoformat(expiry)
        except ValueError:
            expiry = None
    if isinstance(expiry, datetime.datetime):
        expiry = expiry.date()
    if not isinstance(expiry, datetime.date):
        found.append(f"{name}: needs expired_at (YYYY-MM-DD)")
    elif expiry < today:
        found.append(f"{name}: expired on {expiry.isoformat()}: decide again")
    elif (expiry - today).days > MAX_DAYS:
        found.append(f"{name}: expired_at {expiry.isoformat()} is more than {MAX_DAYS} days ahead")
    return found


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else ".trivyignore.yaml")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    found = problems(document, datetime.datetime.now(datetime.UTC).date())
    for problem in found:
        print(f"{path}: {problem}", file=sys.stderr)
    entries = sum(len(document.get(s) or []) for s in SECTIONS) if isinstance(document, dict) else 0
    if not found:
        print(f"{path}: {entries} accepted, each with a statement and a current expiry")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
