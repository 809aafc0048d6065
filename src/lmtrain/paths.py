"""The two artifact directories and the only place that knows their layout.

`DataPaths` is what `prepare` writes (tokenizer, shards, meta.json); `RunPaths` is what `fit`
writes (resolved config, tokenizer copy, meta copy, checkpoints, logs). A run directory holds
everything `eval` and `generate` need to rebuild the model, so they never re-read the corpus.
Small files in them are replaced atomically (`write_atomic`), so a kill never leaves half a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class DataPaths:
    root: Path

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.model"

    def shard(self, split: str, index: int) -> Path:
        return self.root / f"{split}-{index:05d}.tfrecord"

    @property
    def complete(self) -> Path:
        """Written last by `prepare`: a directory without it is not finished data."""
        return self.root / ".complete"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.model"

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old file or the new one, never a mix:
    write a temporary sibling, flush it to disk, rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
