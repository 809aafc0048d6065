"""What the tests share: tiny corpora and configs written into a test's tmp_path, the one way
to run the real CLI in process, and the check that a bad input ended in one clean error line."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

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


def cli(*args: object, input: str | None = None) -> Any:
    """The real CLI, in process (typer's CliRunner); the result has exit_code and output.
    `input`: what the command reads from stdin."""
    from typer.testing import CliRunner

    from lmtrain.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


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


def load_tiny_config(tmp_path: Path, corpus: Path, **changes: dict[str, Any]) -> Any:
    """`tiny_sections` written to tmp_path/c.yaml and loaded: a Config for calling fit or prepare directly."""
    from lmtrain.config.files import load_config

    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_config(write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, **changes)))
