"""scripts/trivyignore.py: an accepted vulnerability without a reason or a review date fails."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import yaml

from support.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "trivyignore.py"
trivyignore = load_script(SCRIPT)
TODAY = datetime.date(2026, 12, 7)


def entry(**fields: object) -> dict[str, object]:
    return {"id": "CVE-2026-0001", **fields}


def test_the_repositorys_file_passes_as_it_is() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(ROOT / ".trivyignore.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "each with a statement and a current expiry" in result.stdout


def test_a_complete_current_entry_passes() -> None:
    document = {"vulnerabilities": [entry(statement="Not reachable.", expired_at="2027-03-01")]}
    assert trivyignore.problems(document, TODAY) == []


def test_an_entry_without_a_statement_or_an_expiry_fails() -> None:
    document = {
        "vulnerabilities": [
            entry(expired_at="2027-03-01"),
            entry(id="CVE-2026-0002", statement="Not reachable."),
            entry(id="CVE-2026-0003", statement="  ", expired_at="March"),
        ]
    }
    assert trivyignore.problems(document, TODAY) == [
        "vulnerabilities[0]: CVE-2026-0001: needs a statement (why it is accepted, who decided)",
        "vulnerabilities[1]: CVE-2026-0002: needs expired_at (YYYY-MM-DD)",
        "vulnerabilities[2]: CVE-2026-0003: needs a statement (why it is accepted, who decided)",
        "vulnerabilities[2]: CVE-2026-0003: needs expired_at (YYYY-MM-DD)",
    ]


def test_an_expired_or_far_off_review_date_fails() -> None:
    # YAML reads an unquoted date as a date, a quoted one as a string: both count.
    document = yaml.safe_load(
        "vulnerabilities:\n"
        "  - {id: CVE-1, statement: ok, expired_at: 2026-12-06}\n"
        "  - {id: CVE-2, statement: ok, expired_at: '2027-12-07'}\n"
        "  - {id: CVE-3, statement: ok, expired_at: 2027-06-05}\n"
    )
    assert trivyignore.problems(document, TODAY) == [
        "vulnerabilities[0]: CVE-1: expired on 2026-12-06: decide again",
        "vulnerabilities[1]: CVE-2: expired_at 2027-12-07 is more than 180 days ahead",
    ]


def test_the_command_fails_and_names_each_problem(tmp_path: Path) -> None:
    path = tmp_path / ".trivyignore.yaml"
    path.write_text("vulnerabilities:\n  - id: CVE-2026-0001\nsurprises: []\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "unknown section 'surprises'" in result.stderr
    assert "CVE-2026-0001: needs a statement" in result.stderr
    assert "CVE-2026-0001: needs expired_at" in result.stderr
