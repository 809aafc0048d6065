"""The two artifact directories and the only place that knows their layout.

`DataPaths` is what `prepare` writes (tokenizer, shards, meta.json); `RunPaths` is what `fit`
writes (resolved config, tokenizer copy, meta copy, checkpoints, logs). A run directory holds
everything `eval` and `generate` need to rebuild the model, so they never re-read the corpus.
"""

from __future__ import annotations

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
    def tokenizer_prefix(self) -> Path:
        """SentencePiece writes `<prefix>.model` and `<prefix>.vocab`."""
        return self.root / "tokenizer"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.model"

    def shard(self, split: str, index: int) -> Path:
        return self.root / f"{split}-{index:05d}.tfrecord"

    def shards(self, split: str) -> list[Path]:
        return sorted(self.root.glob(f"{split}-*.tfrecord"))


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
