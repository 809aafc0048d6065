"""lmtrain.data.corpus: corpus sources (files, directories, globs, compressed), markdown stripping, splits, line
samples."""

import gzip

import pytest

from lmtrain.data.corpus import Document, _strip_markdown, list_documents, split_documents
from lmtrain.errors import LmtrainError


def test_files_dirs_globs_and_gz(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("hello\nworld\n")
    with gzip.open(tmp_path / "a" / "two.txt.gz", "wt") as fh:
        fh.write("zipped line\n")
    (tmp_path / "b.txt").write_text("bee\n")
    docs = list_documents([str(tmp_path / "a"), str(tmp_path / "*.txt")])
    assert [d.path.name for d in docs] == ["one.txt", "two.txt.gz", "b.txt"]
    assert list(docs[1].lines()) == ["zipped line"]


def test_missing_source_is_named(tmp_path):
    with pytest.raises(LmtrainError, match="nothere.txt does not exist"):
        list_documents([str(tmp_path / "nothere.txt")])
    with pytest.raises(LmtrainError, match="matches no file"):
        list_documents([str(tmp_path / "*.zzz")])


def test_markdown_is_stripped():
    assert _strip_markdown("# Hamlet") is None
    assert _strip_markdown("**BERNARDO**  ") == "BERNARDO"
    assert _strip_markdown("_Enter Ghost_") == "Enter Ghost"


def test_split_is_deterministic_and_never_empty(tmp_path):
    for i in range(10):  # similar documents: the split stays by document
        (tmp_path / f"d{i}").write_text("a line of text\n" * 20)
    docs = [Document(name=f"d{i}", path=tmp_path / f"d{i}") for i in range(10)]
    a = split_documents(docs, 0.1, 0.1)
    b = split_documents(list(reversed(docs)), 0.1, 0.1)
    assert a == b
    assert len(a["valid"]) == len(a["test"]) == 1 and len(a["train"]) == 8
    assert not any(d.is_part for split in a.values() for d in split)
    # a single line cannot be cut into three splits
    (tmp_path / "one").write_text("only one line\n")
    with pytest.raises(LmtrainError, match="cannot be split"):
        split_documents([Document(name="one", path=tmp_path / "one")], 0.1, 0.1)


def test_corpus_line_sample_is_uniform_ordered_seeded_and_skips_blank_lines(tmp_path):
    from lmtrain.data.corpus import Document
    from lmtrain.data.vocabsample import sample_lines

    root = tmp_path / "c"
    root.mkdir()
    docs = []
    for d in range(4):  # 1000 numbered lines in 4 documents, every fifth line blank
        path = root / f"{d}.txt"
        path.write_text("".join("\n" if i % 5 == 4 else f"line {d * 250 + i}\n" for i in range(250)))
        docs.append(Document(path.name, path))
    everything = [line for doc in docs for line in doc.lines() if line.strip()]
    assert sample_lines(docs, 1000) == everything == sample_lines(docs, 5000)  # k >= lines: all, in order
    first = sample_lines(docs, 100, seed=3)
    numbers = [int(line.split()[1]) for line in first]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)  # corpus order, no repeats
    assert 60 <= len(first) < 100 and all(n % 5 != 4 for n in numbers)  # blank lines dropped after choosing
    assert sample_lines(docs, 100, seed=3) == first and sample_lines(docs, 100, seed=4) != first
    picks = [0] * 10  # each line is chosen with probability 0.1: every tenth of the corpus gets a tenth
    for seed in range(200):
        for line in sample_lines(docs, 100, seed=seed):
            picks[int(line.split()[1]) // 100] += 1
    assert all(abs(p / sum(picks) - 0.1) < 0.01 for p in picks), picks


def test_corpus_line_sample_reads_crlf_markdown_and_blocks(tmp_path, monkeypatch):
    import lmtrain.data.corpus
    from lmtrain.data.corpus import Document
    from lmtrain.data.vocabsample import sample_lines

    monkeypatch.setattr(lmtrain.data.corpus, "BLOCK_BYTES", 1000)  # many blocks: line numbers carry across them
    path = tmp_path / "d.md"
    path.write_bytes(b"# Title\r\n**A** line\r\nplain\r\n" * 3000)
    doc = Document("d", path, kind="markdown")
    sample = sample_lines([doc], 600, seed=0)
    assert set(sample) <= {"A line", "plain"} and 300 < len(sample) < 600  # headings dropped, CR gone
    numbered = tmp_path / "n.txt"
    numbered.write_text("".join(f"{i}\n" for i in range(5000)))
    picked = [int(x) for x in sample_lines([Document("n", numbered)], 2000, seed=1)]
    assert len(picked) == 2000 and picked == sorted(set(picked)) and picked[-1] > 4000
    monkeypatch.setattr(lmtrain.data.corpus, "BLOCK_BYTES", 1 << 20)  # one block: the same lines
    assert [int(x) for x in sample_lines([Document("n", numbered)], 2000, seed=1)] == picked


def test_line_sample_is_bounded_by_bytes_too(tmp_path):
    from lmtrain.data.vocabsample import sample_lines

    path = tmp_path / "long.txt"
    path.write_text("".join(f"{i} " + "word " * 40 + "\n" for i in range(2000)))  # ~200 bytes a line
    (doc,) = list_documents([str(path)])
    assert len(sample_lines([doc], 1500)) == 1500
    by_bytes = sample_lines([doc], 1500, max_bytes=40_000)
    assert 150 <= len(by_bytes) <= 250  # about 40 kB of 200-byte lines
    assert sum(len(line) + 1 for line in by_bytes) < 50_000
