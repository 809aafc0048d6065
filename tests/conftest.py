"""Shared fixtures: tiny corpora and tiny configs made inside each test's tmp_path."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WORDS = (
    "the king queen lord lady sword crown night day love death heart blood fair foul "
    "sweet good ill speak hear see come go stay fly run swear pray weep laugh sing"
).split()


def write_corpus(root: Path, docs: int = 6, lines: int = 60, seed: int = 0) -> Path:
    """`docs` text files of pseudo-random lines over a small word list."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(lines))
        (root / f"doc{d:02d}.txt").write_text(text + "\n")
    return root


def cli(*args: object) -> Any:
    """The real CLI, in process (typer's CliRunner); the result has exit_code and output."""
    from typer.testing import CliRunner

    from lmtrain.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_error(result: Any, code: int, *fragments: str) -> None:
    """Non-zero exit, one `error:` line naming the culprit, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


def tiny_sections(tmp_path: Path, corpus: Path, **changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A config small enough to prepare and train in seconds on a 2-core CPU."""
    sections: dict[str, dict[str, Any]] = {
        "data": {"corpus": str(corpus), "dir": str(tmp_path / "data"), "valid_fraction": 0.2, "test_fraction": 0.2},
        "tokenizer": {"model_type": "word", "vocab_size": 34},
        "model": {"embedding_dim": 16, "hidden_dim": 24, "num_layers": 1, "dropout": 0.0, "num_sampled": 8},
        "train": {"run_dir": str(tmp_path / "run"), "batch_size": 4, "seq_len": 8, "epochs": 1,
                  "max_steps": 12, "checkpoint_every": 5, "log_every": 4, "learning_rate": 0.01},
    }
    for section, values in changes.items():
        sections[section] = {**sections[section], **values}
    return sections


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def tiny_config(tmp_path: Path, corpus: Path) -> Path:
    return write_config(tmp_path / "tiny.yaml", tiny_sections(tmp_path, corpus))
