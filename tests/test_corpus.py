import gzip

import pytest

from lmtrain.corpus import Document, _strip_markdown, list_documents, split_documents
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
    docs = [Document(name=f"d{i}", path=tmp_path / f"d{i}") for i in range(10)]
    a = split_documents(docs, 0.1, 0.1)
    b = split_documents(list(reversed(docs)), 0.1, 0.1)
    assert a == b
    assert len(a["valid"]) == len(a["test"]) == 1 and len(a["train"]) == 8
    with pytest.raises(LmtrainError, match="cannot be split"):
        split_documents(docs[:2], 0.1, 0.1)
