"""A directory laid out and updated the way the kubelet manages a Secret volume.

Each key is a symbolic link ``key -> ..data/key``; ``..data`` links to a timestamped directory
holding the files. An update writes a new timestamped directory, points a ``..data_tmp`` link at
it and renames that over ``..data`` (one atomic step), then removes the old directory — as
Kubernetes' AtomicWriter does. The files themselves are never written in place.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"


class KubeSecretDir:
    def __init__(self, root: Path, values: Mapping[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._generation = 0
        self.update(values)

    def path(self, key: str) -> Path:
        return self.root / key

    def current_directory(self) -> Path:
        return self.root / os.readlink(self.root / DATA)

    def update(self, values: Mapping[str, str]) -> None:
        """Replace every key's content at once (keys left out disappear)."""
        self._generation += 1
        stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self._generation:06d}"
        new = self.root / stamp
        new.mkdir()
        for key, value in values.items():
            (new / key).write_text(value, encoding="utf-8")
        old = self.current_directory() if (self.root / DATA).is_symlink() else None
        temporary = self.root / (DATA + "_tmp")
        temporary.symlink_to(stamp)
        temporary.replace(self.root / DATA)
        for key in values:
            link = self.root / key
            if not link.is_symlink():
                link.symlink_to(f"{DATA}/{key}")
        for link in self.root.iterdir():
            if link.is_symlink() and not link.name.startswith("..") and link.name not in values:
                link.unlink()
        if old is not None:
            shutil.rmtree(old)
