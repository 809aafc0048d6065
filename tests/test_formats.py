"""Corpus formats: compressed text, JSON Lines and Parquet read as the same documents as plain
text files, split at record boundaries, and bad records as one-line errors (real files made here)."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sentencepiece as spm
import zstandard
from helpers import WORDS, assert_clean_error, cli, write_config

from lmtrain.data.corpus import list_documents, split_documents

_COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
             ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}


def _records(n: int = 120, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i, "text": "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
                                        for _ in range(rng.randint(1, 3)))} for i in range(n)]


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _prepare(tmp_path: Path, name: str, corpus, **data) -> dict:
    """Prepare `corpus` at word level (every word: the vocabulary depends only on the counts);
    return the data directory's files by name."""
    sections = {"data": {"corpus": corpus, "dir": str(tmp_path / f"data-{name}"), **data},
                "tokenizer": {"model_type": "word", "vocab_size": None}}
    r = cli("prepare", write_config(tmp_path / f"{name}.yaml", sections), "-q")
    assert r.exit_code == 0, r.output
    root = tmp_path / f"data-{name}"
    meta = json.loads((root / "meta.json").read_text())
    splits = {name: {k: v for k, v in stats.items() if k not in ("documents", "parts")}
              for name, stats in meta["splits"].items()}
    tokenizer = spm.SentencePieceProcessor(model_file=str(root / "tokenizer.model"))  # (its bytes name a temp file)
    shards = {p.name: p.read_bytes() for p in root.iterdir()
              if p.name not in ("meta.json", ".complete", "tokenizer.model")}
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.get_piece_size())]
    return shards | {"pieces": pieces, "splits": splits, "unigram_counts": meta["unigram_counts"],
                     "vocab_size": meta["vocab_size"]}


@pytest.mark.slow
def test_every_format_gives_the_ids_of_one_text_file_per_record(tmp_path):
    records = _records()
    (tmp_path / "txt").mkdir()
    for r in records:  # one document per file, in the order of the records
        (tmp_path / "txt" / f"r{r['id']:04d}.txt").write_text(r["text"] + "\n")
    raw = _jsonl(records)
    files = {"plain.jsonl": raw, "blank-lines.jsonl": raw.replace(b"\n", b"\n\n")}
    files.update({f"c.jsonl{ext}": compress(raw) for ext, compress in _COMPRESS.items()})
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    table = pa.table({"id": [r["id"] for r in records], "text": [r["text"] for r in records]})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=25)  # several row groups

    expected = _prepare(tmp_path, "txt", {"train": str(tmp_path / "txt")})
    assert expected["unigram_counts"][1] == len(records)  # one </s> a record
    for name in [*files, "c.parquet"]:
        got = _prepare(tmp_path, name.replace(".", "-"), {"train": str(tmp_path / name)})
        assert got == expected, name


@pytest.mark.slow
@pytest.mark.parametrize("ext", sorted(_COMPRESS))
def test_compressed_text_reads_as_the_plain_file_and_splits_by_its_text(tmp_path, ext):
    text = "".join(f"{' '.join(random.Random(i).choices(WORDS, k=6))}\n" for i in range(400)).encode()
    (tmp_path / "plain.txt").write_bytes(text)
    packed = tmp_path / f"packed.txt{ext}"
    packed.write_bytes(_COMPRESS[ext](text))
    assert _prepare(tmp_path, "packed", {"train": str(packed)}) == _prepare(tmp_path, "plain",
                                                                            {"train": str(tmp_path / "plain.txt")})
    (doc,) = list_documents([str(packed)])
    splits = split_documents([doc], 0.1, 0.1)
    parts = [splits[name][0] for name in ("train", "valid", "test")]
    assert b"".join(b.data for part in parts for b in part.blocks(500)) == text  # contiguous, nothing lost
    for part in parts:
        assert part.start == 0 or text[part.start - 1:part.start] == b"\n"
    for part in parts[1:]:  # shares of the decompressed text, measured in the file's bytes
        assert 0.08 < (part.end - part.start) / len(text) < 0.12
        assert 0.08 < part.size / packed.stat().st_size < 0.12


def test_one_compressed_records_file_is_cut_between_records(tmp_path):
    records = _records(600, seed=1)
    raw = _jsonl(records)
    (tmp_path / "c.jsonl.zst").write_bytes(_COMPRESS[".zst"](raw))
    (doc,) = list_documents([str(tmp_path / "c.jsonl.zst")])
    splits = split_documents([doc], 0.1, 0.1)
    parts = {name: docs[0] for name, docs in splits.items()}
    assert parts["train"].start == 0 and parts["train"].end == parts["valid"].start
    assert parts["valid"].end == parts["test"].start and parts["test"].end == len(raw)
    for part in parts.values():  # every cut is at a record's start
        assert part.start == 0 or raw[part.start - 1:part.start] == b"\n"
    total = sum(p.size for p in parts.values())
    for name in ("valid", "test"):
        assert 0.07 < parts[name].size / total < 0.13, name
    texts = [t for part in parts.values() for block in part.blocks() for t in part.texts(block)]
    assert [t[0] for t in texts] == [r["text"] for r in records]


def test_parquet_files_are_cut_at_rows(tmp_path):
    records = _records(400, seed=2)
    pq.write_table(pa.table({"body": [r["text"] for r in records]}), tmp_path / "c.parquet", row_group_size=64)
    (doc,) = list_documents([str(tmp_path / "c.parquet")], text_field="body")
    splits = split_documents([doc], 0.1, 0.1)
    texts = [t[0] for name in ("train", "valid", "test") for part in splits[name]
             for block in part.blocks(200) for t in part.texts(block)]
    assert texts == [r["text"] for r in records]
    assert 20 < splits["test"][0].end - splits["test"][0].start < 60  # rows


@pytest.mark.slow
@pytest.mark.parametrize("name, content, fragments", [
    ("bad.jsonl", b'{"text": "a b"}\n{"text": "c"}\n{"text": oops}\n', ["bad.jsonl, line 3", "not JSON"]),
    ("nofield.jsonl", b'{"text": "a"}\n\n{"body": "b", "id": 2}\n', ["line 3", "no 'text' field", "'body'",
                                                                    "data.text_field"]),
    ("number.jsonl.gz", gzip.compress(b'{"text": "a"}\n{"text": 7}\n'), ["line 2", "'text' field is a JSON number"]),
    ("list.jsonl", b'["a", "b"]\n', ["line 1", "a JSON array, not an object"]),
    ("c.txt.zip", b"PK\x03\x04" + bytes(200), ["zip archive"]),
    ("c.txt.gz", gzip.compress(b"\x00\x01binary" * 100), ["gzip-compressed, but what it holds is not text"]),
    ("c.bin", b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(100), ["is not text: NUL bytes", "gzip, bzip2, xz, zstd"]),
])
def test_bad_records_and_binary_files_are_one_line_errors(tmp_path, name, content, fragments):
    (tmp_path / name).write_bytes(content)
    sections = {"data": {"corpus": {"train": str(tmp_path / name)}, "dir": str(tmp_path / "data")},
                "tokenizer": {"model_type": "word", "vocab_size": None}}
    r = cli("prepare", write_config(tmp_path / "c.yaml", sections), "-q")
    assert_clean_error(r, 2, *fragments)
    assert not (tmp_path / "data").exists()  # nothing written
    sections["data"]["corpus"] = str(tmp_path / name)  # one file to split: named before any cut is sought
    r = cli("prepare", write_config(tmp_path / "c.yaml", sections), "-q")
    if name.startswith("c."):  # the files that are not text
        assert_clean_error(r, 2, *fragments)
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_a_bad_record_in_a_held_out_part_is_named_by_its_line_in_the_file(tmp_path):
    lines = [json.dumps(r) for r in _records(300, seed=3)]
    lines[290] = '{"txt": "typo"}'
    (tmp_path / "c.jsonl.xz").write_bytes(lzma.compress(("\n".join(lines) + "\n").encode()))
    sections = {"data": {"corpus": str(tmp_path / "c.jsonl.xz"), "dir": str(tmp_path / "data")},
                "tokenizer": {"model_type": "word", "vocab_size": None}}
    r = cli("prepare", write_config(tmp_path / "c.yaml", sections), "-q")
    assert_clean_error(r, 2, "c.jsonl.xz, line 291", "no 'text' field", "'txt'")


@pytest.mark.slow
@pytest.mark.parametrize("table, field, fragments", [
    ({"body": ["a b", "c"]}, "text", ["no column 'text'", "'body'"]),
    ({"text": [1, 2]}, "text", ["column 'text' holds int64, expected strings"]),
    ({"text": ["a b", None, "c"]}, "text", ["row 2", "null"]),
])
def test_bad_parquet_columns_are_one_line_errors(tmp_path, table, field, fragments):
    pq.write_table(pa.table(table), tmp_path / "c.parquet")
    sections = {"data": {"corpus": {"train": str(tmp_path / "c.parquet")}, "dir": str(tmp_path / "data"),
                         "text_field": field}, "tokenizer": {"model_type": "word", "vocab_size": None}}
    r = cli("prepare", write_config(tmp_path / "c.yaml", sections), "-q")
    assert_clean_error(r, 2, *fragments)
    assert not (tmp_path / "data").exists()


def test_a_directory_picks_up_every_format(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for name in ("a.txt", "b.jsonl", "c.jsonl.zst", "d.parquet", "e.txt.xz", "notes.csv"):
        (root / name).write_bytes(b"x")
    assert [Path(d.name).name for d in list_documents([str(root)])] == ["a.txt", "b.jsonl", "c.jsonl.zst",
                                                                          "d.parquet", "e.txt.xz"]
    kinds = {Path(d.name).name: d.kind for d in list_documents([str(root)])}
    assert kinds == {"a.txt": "text", "b.jsonl": "jsonl", "c.jsonl.zst": "jsonl", "d.parquet": "parquet",
                     "e.txt.xz": "text"}
