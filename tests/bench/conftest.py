"""The benchmarks are the package ``bench`` of the repository root, which pytest does not put on
the path (its ``pythonpath`` is ``tests``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.append(ROOT)
