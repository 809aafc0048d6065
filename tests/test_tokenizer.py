"""lmtrain.data.tokenizer: SentencePiece round trips, vocabulary-size errors, the same vocabulary in every process."""

import subprocess
import sys

import pytest
from helpers import WORDS

from lmtrain.config.schema import TokenizerConfig
from lmtrain.data.tokenizer import EOS_ID, NL_ID, train_tokenizer
from lmtrain.errors import LmtrainError


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


def test_same_vocabulary_in_every_process_when_the_corpus_is_sampled(tmp_path):
    # SentencePiece's own sampler draws differently in each process even when seeded; ours
    # does not. 600 distinct lines, 150 kept: two processes must write the same model.
    script = (
        "import sys; from pathlib import Path; from lmtrain.config.schema import TokenizerConfig; "
        "from lmtrain.data.tokenizer import train_tokenizer; "
        "lines = [f'w{i % 97} w{(i * 7) % 89} w{(i * 13) % 83} x{i}' for i in range(600)]; "
        "train_tokenizer(lines, TokenizerConfig(model_type='unigram', vocab_size=60, max_sentences=150), "
        "Path(sys.argv[1]))"
    )
    models = []
    for name in ("a.model", "b.model"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, timeout=120)
        models.append((tmp_path / name).read_bytes())
    assert models[0] == models[1]


def test_each_unknown_word_is_one_unk(tmp_path):
    # SentencePiece merges a run of unknown pieces into one <unk>: at word level that dropped
    # tokens (4,010 of Penn Treebank's training split). Every whitespace word is one id.
    from lmtrain.data.tokenizer import UNK_ID

    counts = {w: 10 for w in WORDS}
    tok = train_tokenizer([], TokenizerConfig(model_type="word", vocab_size=None), tmp_path / "w.model", counts)
    line = "the zzz <unk> qqq king yyy"
    ids = tok.encode_lines([line])[0]
    assert len(ids) == len(line.split()) + 1 and ids.count(UNK_ID) == 4 and ids[-1] == NL_ID
    expected = ids + tok.encode_lines(["the king"])[0] + [EOS_ID]
    assert tok.encode_stream([line, "the king"], records=[2]).tolist() == expected
    assert tok.encode_document(line) == ids + [EOS_ID]
