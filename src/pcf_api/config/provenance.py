"""Where each setting came from, kept beside the validated settings.

Its own module because both the loader (which records it) and the safety policy (whose problems
name it) need it, and the loader calls the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pcf_api.config.schema import Settings


@dataclass(frozen=True)
class Source:
    """Where one value came from: its layer and the exact place within it."""

    layer: Literal["default", "profile", "toml", "env", "cli"]
    where: str = ""

    def __str__(self) -> str:
        return f"{self.layer} {self.where}".strip()


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: Mapping[str, Source]

    def source_of(self, key: str) -> Source:
        return self.sources.get(key, Source("default"))
