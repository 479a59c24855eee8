"""Fail unless every line of the critical modules ran in the test suite.

The overall gate (fail_under in pyproject.toml) is checked by `coverage report`; this adds the
stricter rule for the code paths the specification names as critical.
"""

from __future__ import annotations

import sys
from pathlib import Path

import coverage

CRITICAL_MODULES = (
    "src/pcf_api/config/schema.py",  # configuration validation
    "src/pcf_api/config/loader.py",  # configuration layers and their sources
    "src/pcf_api/config/policy.py",  # production safety
    "src/pcf_api/config/provenance.py",
    "src/pcf_api/health.py",  # health state transitions
    "src/pcf_api/errors.py",  # error mapping
    "src/pcf_api/resilience.py",  # retry: the bounded write wait
)


def main() -> int:
    cov = coverage.Coverage()
    cov.load()
    failures = []
    for module in CRITICAL_MODULES:
        _, statements, _, missing, _ = cov.analysis2(str(Path(module).resolve()))
        if not statements:
            failures.append(f"{module}: not measured at all")
        elif missing:
            failures.append(f"{module}: lines not covered: {', '.join(map(str, missing))}")
        else:
            print(f"{module}: all {len(statements)} lines covered")
    for failure in failures:
        print(f"coverage gate: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
