import subprocess
import sys

import pytest

from lmtrain.config import TokenizerConfig
from lmtrain.errors import LmtrainError
from lmtrain.tokenizer import EOS_ID, NL_ID, sample_lines, train_tokenizer

from conftest import WORDS


def _lines():
    return [" ".join(WORDS[i:i + 5]) for i in range(len(WORDS) - 5)] * 5


@pytest.mark.parametrize("kind", ["unigram", "bpe", "char", "word"])
def test_round_trip_keeps_line_breaks(tmp_path, kind):
    size = {"unigram": 40, "bpe": 40, "char": 40, "word": 30}[kind]
    tok = train_tokenizer(_lines(), TokenizerConfig(model_type=kind, vocab_size=size), tmp_path / "t.model")
    text = "lady sword\ncrown night\n\nday"  # words frequent enough for the 30-piece word model
    ids = tok.encode_text(text)
    assert ids.count(NL_ID) == 3 and EOS_ID not in ids
    assert tok.decode(ids) == text


def test_vocabulary_too_large_names_the_key(tmp_path):
    with pytest.raises(LmtrainError, match=r"tokenizer.vocab_size: 5000 is too large for this corpus \(at most \d+"):
        train_tokenizer(_lines(), TokenizerConfig(model_type="unigram", vocab_size=5000), tmp_path / "t.model")


def test_line_sample_is_uniform_ordered_and_seeded():
    lines = [f"line {i}" for i in range(1000)]
    assert sample_lines(iter(lines[:7]), 10) == lines[:7]  # fewer lines than k: all, in order
    first = sample_lines(iter(lines), 50, seed=3)
    assert len(first) == 50 == len(set(first))
    assert first == sorted(first, key=lines.index)  # original order kept
    assert sample_lines(iter(lines), 50, seed=3) == first and sample_lines(iter(lines), 50, seed=4) != first
    # Each line is kept with probability k/n = 0.05: over 400 samples, every tenth of the
    # stream gets close to a tenth of the picks (this would fail if early or late lines were favoured).
    picks = [0] * 10
    for seed in range(400):
        for line in sample_lines(iter(lines), 50, seed=seed):
            picks[int(line.split()[1]) // 100] += 1
    assert all(abs(p / 20000 - 0.1) < 0.01 for p in picks), picks


def test_same_vocabulary_in_every_process_when_the_corpus_is_sampled(tmp_path):
    # SentencePiece's own sampler draws differently in each process even when seeded; ours
    # does not. 600 distinct lines, 150 kept: two processes must write the same model.
    script = (
        "import sys; from pathlib import Path; from lmtrain.config import TokenizerConfig; "
        "from lmtrain.tokenizer import train_tokenizer; "
        "lines = [f'w{i % 97} w{(i * 7) % 89} w{(i * 13) % 83} x{i}' for i in range(600)]; "
        "train_tokenizer(lines, TokenizerConfig(model_type='unigram', vocab_size=60, max_sentences=150), Path(sys.argv[1]))"
    )
    models = []
    for name in ("a.model", "b.model"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, timeout=120)
        models.append((tmp_path / name).read_bytes())
    assert models[0] == models[1]
