"""The two artifact directories and the only place that knows their layout.

`DataPaths` is what `prepare` writes (tokenizer, shards, meta.json); `RunPaths` is what `fit`
writes (resolved config, tokenizer copy, meta copy, checkpoints, logs). A run directory holds
everything `eval` and `generate` need to rebuild the model, so they never re-read the corpus.
Small files in them are replaced atomically (`write_atomic`), so a kill never leaves half a file;
an export directory is written beside its target and renamed into place (`publish_dir`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lmtrain.errors import LmtrainError, describe_write_error

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
    def best_checkpoints(self) -> Path:
        """Where early stopping (train.patience) keeps the best checkpoint, the one the verbs use."""
        return self.checkpoints / "best"

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


EXPORT_INFO = "lmtrain.json"  # in every export directory: what it holds; marks it as one lmtrain may replace


def check_export_target(target: Path) -> Path:
    """`target`, if an export may be written there: nothing is there, or an earlier lmtrain
    export (it holds `EXPORT_INFO`). Anything else is the user's: an error, before any work."""
    target = Path(target)
    if target.exists() and not (target.is_dir() and (target / EXPORT_INFO).is_file()):
        kind = "directory" if target.is_dir() else "file"
        raise LmtrainError(f"--out {target}: a {kind} that is not an lmtrain export is there; "
                           f"choose another --out or remove it")
    return target


def publish_dir(target: Path, fill: Callable[[Path], None], what: str = "export") -> Path:
    """Write a directory with `fill(tmp)` beside `target`, then rename it into place: a failure
    leaves whatever was at `target` untouched and nothing half-written.

    An existing `target` is replaced only when it is an earlier lmtrain export (it holds
    `EXPORT_INFO`); any other file or directory there is the user's, and is an error.
    """
    target = check_export_target(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        fill(tmp)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise LmtrainError(f"{what} could not write {target}: {describe_write_error(exc)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
