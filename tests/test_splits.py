"""Corpora as users have them: one big file, uneven documents, official splits, word level."""

import random

import pytest
from helpers import WORDS, assert_clean_error, cli, write_config

from lmtrain.config.files import load_config
from lmtrain.data.corpus import SPLIT_TOLERANCE, list_documents, split_documents
from lmtrain.data.prepare import prepare

SHARE = 0.1  # valid and test fraction in these tests


def _lines(n, seed=0):
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) + "\n" for _ in range(n))


def _sections(tmp_path, corpus, **data):
    return {"data": {"corpus": corpus, "dir": str(tmp_path / "data"), "valid_fraction": SHARE,
                     "test_fraction": SHARE, **data},
            "tokenizer": {"model_type": "word", "vocab_size": None}}


def _prepare(tmp_path, corpus, **data):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = load_config(write_config(tmp_path / "c.yaml", _sections(tmp_path, corpus, **data)))
    return prepare(cfg, progress=False).meta


def _shares(meta):
    total = sum(s.tokens for s in meta.splits.values())
    return {name: s.tokens / total for name, s in meta.splits.items()}


def _within_band(share):
    return SHARE * (1 - SPLIT_TOLERANCE) - 0.01 <= share <= SHARE * (1 + SPLIT_TOLERANCE) + 0.01


@pytest.mark.slow
def test_one_file_is_split_by_blocks_with_the_asked_shares(tmp_path):
    (tmp_path / "input.txt").write_text(_lines(2000))
    meta = _prepare(tmp_path, str(tmp_path / "input.txt"))
    shares = _shares(meta)
    assert _within_band(shares["valid"]) and _within_band(shares["test"]), shares
    # the end of the file is the test text, the part before it the validation text
    names = {s: meta.documents[s] for s in ("train", "valid", "test")}
    assert all(len(v) == 1 and "@" in v[0] for v in names.values()), names
    ends = {s: tuple(int(x) for x in v[0].rsplit("@", 1)[1].split("-")) for s, v in names.items()}
    size = (tmp_path / "input.txt").stat().st_size
    assert ends["train"][0] == 0 and ends["train"][1] == ends["valid"][0] and ends["valid"][1] == ends["test"][0]
    assert ends["test"][1] == size
    # only the file's real end gets an end-of-document token: no </s> at the cuts
    assert sum(s.parts for s in meta.splits.values()) == 3


@pytest.mark.slow
def test_many_uneven_documents_get_their_shares_of_the_text(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    rng = random.Random(1)
    for i in range(30):  # from 20 to 600 lines
        (root / f"doc{i:02d}.txt").write_text(_lines(rng.choice([20, 40, 80, 300, 600]), seed=i))
    meta = _prepare(tmp_path, str(root))
    shares = _shares(meta)
    assert _within_band(shares["valid"]) and _within_band(shares["test"]), shares


@pytest.mark.slow
def test_many_similar_documents_stay_split_by_document(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(20):
        (root / f"doc{i:02d}.txt").write_text(_lines(50, seed=i))
    meta = _prepare(tmp_path, str(root))
    assert sum(s.parts for s in meta.splits.values()) == 0
    assert meta.splits["valid"].documents == meta.splits["test"].documents == 2


@pytest.mark.slow
def test_the_split_is_deterministic(tmp_path):
    (tmp_path / "input.txt").write_text(_lines(800))
    a = _prepare(tmp_path / "a", str(tmp_path / "input.txt"))
    b = _prepare(tmp_path / "b", str(tmp_path / "input.txt"))
    assert a.documents == b.documents and a.splits == b.splits


@pytest.mark.slow
@pytest.mark.parametrize("given", [("train", "valid", "test"), ("train",)])
def test_official_splits_are_used_as_given(tmp_path, given):
    for i, name in enumerate(("train", "valid", "test")):
        (tmp_path / f"{name}.txt").write_text(_lines(300 if name == "train" else 40, seed=i))
    corpus = {name: str(tmp_path / f"{name}.txt") for name in given}
    meta = _prepare(tmp_path, corpus, valid_fraction=None, test_fraction=None)
    for name in ("train", "valid", "test"):
        expected = [str(tmp_path / f"{name}.txt")] if name in given else []
        assert meta.documents[name] == expected
    assert meta.splits["valid"].tokens == (0 if "valid" not in given else meta.splits["valid"].tokens)


@pytest.mark.slow
def test_word_level_counts_every_word_line_and_document(tmp_path):
    root = tmp_path / "ptb"
    root.mkdir()
    texts = {name: _lines(n, seed=i) for i, (name, n) in enumerate((("train", 200), ("valid", 30), ("test", 30)))}
    texts["train"] += "a rare word <unk> appears\n"
    for name, text in texts.items():
        (root / f"{name}.txt").write_text(text)
    corpus = {name: str(root / f"{name}.txt") for name in texts}
    meta = _prepare(tmp_path, corpus, valid_fraction=None, test_fraction=None)
    types = {w for line in texts["train"].splitlines() for w in line.split()}
    # every word type, plus <unk>, </s>, <nl> and the word model's own "▁<nl>"; PTB's literal
    # "<unk>" word is SentencePiece's <unk> itself
    types -= {"<unk>"}
    assert meta.vocab_size == len(types) + 4
    assert meta.unigram_counts[0] == texts["train"].split().count("<unk>") == 1  # nothing else is unknown
    for name, text in texts.items():
        lines = text.splitlines()
        words = sum(len(line.split()) for line in lines)
        assert meta.splits[name].tokens == words + len(lines) + 1, name  # + one </s> per file
    # ids follow frequency (what the log-uniform sampler assumes)
    learned = [c for c in meta.unigram_counts[3:] if c > 0]
    assert len(learned) == len(types) and learned == sorted(learned, reverse=True)


@pytest.mark.slow
def test_prepare_prints_the_split(tmp_path):
    (tmp_path / "input.txt").write_text(_lines(1000))
    cfg = write_config(tmp_path / "c.yaml", _sections(tmp_path, str(tmp_path / "input.txt")))
    r = cli("prepare", cfg, "-q")
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.output.splitlines() if line.startswith("  ")}
    assert set(rows) == {"train", "valid", "test"}
    assert "(" in rows["test"] and "%)" in rows["test"] and "part(s) cut from a file" in rows["test"]
    assert "vocabulary " in r.output


@pytest.mark.slow
@pytest.mark.parametrize("corpus, data, message", [
    ({"train": "TRAIN", "dev": "VALID"}, {}, "data.corpus: unknown split 'dev'"),
    ({"train": "TRAIN", "valid": "EMPTY"}, {}, "data.corpus.valid:"),
    ({"train": "TRAIN", "valid": "TRAIN"}, {}, "is in both the train and the valid split"),
    ({"train": "TRAIN", "valid": "VALID"}, {"valid_fraction": 0.1}, "data.valid_fraction: must be unset"),
])
def test_bad_split_mappings_are_one_line_errors_and_write_nothing(tmp_path, corpus, data, message):
    (tmp_path / "train.txt").write_text(_lines(100))
    (tmp_path / "valid.txt").write_text(_lines(20, seed=2))
    (tmp_path / "empty.txt").write_text("")
    paths = {"TRAIN": str(tmp_path / "train.txt"), "VALID": str(tmp_path / "valid.txt"),
             "EMPTY": str(tmp_path / "empty.txt")}
    sections = _sections(tmp_path, {k: paths[v] for k, v in corpus.items()}, valid_fraction=None,
                         test_fraction=None)
    sections["data"].update(data)
    r = cli("prepare", write_config(tmp_path / "c.yaml", sections), "-q")
    assert_clean_error(r, 2 if "must be unset" in message or "unknown split" in message else 1, message)
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_null_vocabulary_needs_the_word_model(tmp_path):
    sections = _sections(tmp_path, str(tmp_path))
    sections["tokenizer"]["model_type"] = "bpe"
    r = cli("prepare", write_config(tmp_path / "c.yaml", sections), "-q")
    assert_clean_error(r, 2, "tokenizer.vocab_size: null", "model_type=word")


def test_a_big_document_is_cut_only_at_line_ends(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(_lines(500))
    (doc,) = list_documents([str(path)])
    parts = split_documents([doc], 0.05, 0.05)
    data = path.read_bytes()
    pieces = [d for split in parts.values() for d in split]
    assert sum(d.size for d in pieces) == len(data)
    for d in pieces:
        assert d.start == 0 or data[d.start - 1:d.start] == b"\n"
        assert b"".join(b.data for b in d.blocks()) == data[d.start:d.end]
