"""What `prepare` records about a prepared data directory (`meta.json`), as one typed object.

`prepare` writes it, `fit` copies it into the run directory, and `fit`, `eval`, `generate` and
the Python API read it back through `load_meta`, which checks the version and the fields once,
so no other module parses the JSON or trusts a key to be there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmtrain.errors import LmtrainError
from lmtrain.paths import DataPaths

META_VERSION = 2


@dataclass(frozen=True)
class SplitStats:
    """One split of the prepared corpus."""

    documents: int
    tokens: int  # ids written, end-of-line and end-of-document ids included
    characters: int  # of the raw text
    bytes: int  # UTF-8 bytes of the raw text (each line with its newline)
    words: int  # whitespace-separated words of the raw text
    shard_bytes: list[int] = field(default_factory=list)  # the size of each shard file, in order
    parts: int = 0  # of the documents, how many are parts of a file cut at a line end (the split by size)
    unk_tokens: int | None = None  # ids that are <unk> (out of vocabulary); None: prepared before it was counted

    @property
    def unk_rate(self) -> float | None:
        return None if self.unk_tokens is None else self.unk_tokens / max(self.tokens, 1)


@dataclass(frozen=True)
class DataMeta:
    """meta.json: the tokenizer's vocabulary, the splits and the training unigram counts."""

    fingerprint: str  # of the data/tokenizer config that made it (Config.data_fingerprint)
    vocab_size: int
    splits: dict[str, SplitStats]  # train, valid, test
    documents: dict[str, list[str]]  # document names per split
    unigram_counts: list[int]  # how often each id occurs in the training split
    replaced_characters: dict[str, int] = field(default_factory=dict)  # per file, when not valid UTF-8
    version: int = META_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def has_split(self, split: str) -> bool:
        """True when the split holds anything to score (a split of one token predicts nothing)."""
        stats = self.splits.get(split)
        return stats is not None and stats.tokens > 1


def load_meta(path: Path) -> DataMeta:
    """Read and check a meta.json; a clear error naming the file if it is not one of ours."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LmtrainError(f"{path}: unreadable ({exc}); run `lmtrain prepare --force`") from None
    if not isinstance(raw, dict) or raw.get("version") != META_VERSION:
        raise LmtrainError(f"{path}: written by another lmtrain version; run `lmtrain prepare --force`")
    try:
        splits = {name: SplitStats(**stats) for name, stats in raw["splits"].items()}
        return DataMeta(
            fingerprint=str(raw["fingerprint"]), vocab_size=int(raw["vocab_size"]), splits=splits,
            documents={k: list(v) for k, v in raw["documents"].items()},
            unigram_counts=[int(c) for c in raw["unigram_counts"]],
            replaced_characters=dict(raw.get("replaced_characters") or {}), version=int(raw["version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LmtrainError(f"{path}: not a complete meta.json ({type(exc).__name__}: {exc}); "
                           f"run `lmtrain prepare --force`") from None


def load_prepared(paths: DataPaths) -> DataMeta:
    """The meta of a finished prepared directory; a clear error if `prepare` has not completed."""
    if not paths.meta.is_file():
        raise LmtrainError(f"no prepared data in {paths.root}: run `lmtrain prepare` with this config first")
    if not paths.complete.is_file():
        raise LmtrainError(f"{paths.root} holds an unfinished prepare (no completion marker); run `lmtrain "
                           "prepare --force`")
    return load_meta(paths.meta)
