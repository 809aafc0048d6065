"""Crash-safe checkpoints of one run: a complete checkpoint is always there to resume from.

Layout under `<run_dir>/checkpoints/`:

    step-00000500/ckpt.index, ckpt.data-*   one complete checkpoint per directory
    latest                                  the name of the newest complete one (one line)

A save writes into a hidden temporary directory, flushes it to disk, renames it to its final
name (a rename is atomic: the directory is either absent or complete), and only then replaces
`latest` (written to a temporary file, then renamed over the old one). A process killed at any
moment therefore leaves `latest` naming a complete checkpoint; leftovers of an unfinished save
are removed by the next one. Old checkpoints are pruned only after `latest` has moved on.

`tf.train.CheckpointManager` is not used because its checkpoint files share one directory, so
an unfinished save cannot be told apart by name, and it offers no seam to test a failure
between the write and the commit.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import tensorflow as tf

from lmtrain.errors import LmtrainError, describe_write_error
from lmtrain.paths import write_atomic

_PREFIX = "ckpt"
_DIR = re.compile(r"^step-(\d{8,})$")


class CheckpointStore:
    """Save and find the checkpoints of one run directory."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory
        self.keep = keep

    def latest(self) -> str | None:
        """Prefix (for `tf.train.Checkpoint.read`) of the newest complete checkpoint, or None.

        `latest` is trusted when it names a complete checkpoint; otherwise (a file deleted or
        edited by hand) the newest complete directory is used.
        """
        pointer = self.directory / "latest"
        if pointer.is_file():
            name = pointer.read_text(errors="replace").strip()
            if _DIR.match(name) and self._complete(self.directory / name):
                return str(self.directory / name / _PREFIX)
        steps = self._steps()
        return str(self.directory / _name(steps[-1]) / _PREFIX) if steps else None

    def save(self, checkpoint: tf.train.Checkpoint, step: int) -> str:
        """Write `checkpoint` as the one for `step`, make it the latest, prune old ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_unfinished()
        final = self.directory / _name(step)
        if not self._complete(final):  # the same step twice (stopped right after a resume)
            tmp = self.directory / f".tmp-{_name(step)}"
            try:
                checkpoint.write(str(tmp / _PREFIX))
                _fsync_tree(tmp)
            except (OSError, tf.errors.OpError) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise self._write_error(step, exc) from None
            shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover of that name
            self._commit(tmp, final)
        self._point_to(final.name)
        self._prune()
        return str(final / _PREFIX)

    # ---- steps of a save, each atomic ---------------------------------------------------------

    def _commit(self, tmp: Path, final: Path) -> None:
        """Make a fully written checkpoint directory visible under its final name."""
        os.rename(tmp, final)
        _fsync_dir(self.directory)

    def _point_to(self, name: str) -> None:
        try:
            write_atomic(self.directory / "latest", (name + "\n").encode())
            _fsync_dir(self.directory)
        except OSError as exc:
            raise self._write_error(int(name.split("-")[1]), exc) from None

    def _prune(self) -> None:
        steps = self._steps()
        for step in steps[: max(0, len(steps) - self.keep)]:
            shutil.rmtree(self.directory / _name(step), ignore_errors=True)

    def _remove_unfinished(self) -> None:
        for leftover in self.directory.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def set_aside(self, path: str) -> Path:
        """Rename the checkpoint holding `path` (a prefix `latest` gave) aside as
        `damaged-step-...`: it is never deleted, and no longer counts as a checkpoint (nor is
        pruned), so `latest` falls back to the one before it."""
        directory = Path(path).parent
        aside = directory.with_name(f"damaged-{directory.name}")
        n = 1
        while aside.exists():
            n += 1
            aside = directory.with_name(f"damaged-{directory.name}-{n}")
        directory.rename(aside)
        return aside

    # ---- reading ------------------------------------------------------------------------------

    def newest_first(self) -> list[str]:
        """Prefixes of every complete checkpoint, the newest first."""
        return [str(self.directory / _name(step) / _PREFIX) for step in reversed(self._steps())]

    def _steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _DIR.match(p.name))]
        return sorted(step for step, path in found if self._complete(path))

    @staticmethod
    def _complete(path: Path) -> bool:
        return (path / f"{_PREFIX}.index").is_file()

    def _write_error(self, step: int, exc: BaseException) -> LmtrainError:
        previous = self.latest()
        kept = f"the last checkpoint ({previous}) is intact" if previous else "no earlier checkpoint exists"
        return LmtrainError(f"could not write the checkpoint of step {step} in {self.directory}: "
                            f"{describe_write_error(exc)}; {kept}")


def _name(step: int) -> str:
    return f"step-{step:08d}"


def step_of(path: str) -> int | None:
    """The step of a checkpoint prefix this store gave (None for another path)."""
    match = _DIR.match(Path(path).parent.name)
    return int(match.group(1)) if match else None


def _fsync_tree(directory: Path) -> None:
    """Flush a freshly written directory's files, so a power loss cannot leave it half empty."""
    for path in directory.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
