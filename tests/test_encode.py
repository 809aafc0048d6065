"""Parallel encoding for prepare: worker processes write exactly what one process writes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_sections, write_config, write_corpus

from lmtrain.config.files import load_config
from lmtrain.data.corpus import Document, list_documents
from lmtrain.data.encode import BlockEncoder
from lmtrain.data.prepare import prepare


def _awkward_corpus(root: Path) -> Path:
    """Plain lines plus what reading must get right: CRLF line ends, bytes that are not UTF-8,
    empty lines, no final line end, and a gzipped document."""
    write_corpus(root, docs=6, lines=80)
    (root / "crlf.txt").write_bytes(b"the king\r\nthe queen \r\n\r\nlove death\r\n")
    (root / "latin1.txt").write_bytes(b"sweet caf\xe9 day\nfair \xff\xfe night\n")
    (root / "nofinal.txt").write_bytes(b"speak hear\n\n\nsee come go")
    with gzip.open(root / "zipped.gz", "wb") as fh:
        fh.write(b"the lord laugh\nsing pray weep\n" * 50)
    return root


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes_as_one_process(tmp_path):
    corpus = _awkward_corpus(tmp_path / "corpus")
    outputs = {}
    for workers in (1, 2):
        sections = tiny_sections(tmp_path / f"w{workers}", corpus, data={"workers": workers})
        cfg = load_config(write_config(tmp_path / f"w{workers}.yaml", sections))
        prepare(cfg, progress=False, echo=lambda _: None)
        outputs[workers] = {p.name: p.read_bytes() for p in sorted(Path(cfg.data.dir).iterdir())}
    assert outputs[1].keys() == outputs[2].keys() and any(k.startswith("train-") for k in outputs[1])
    for name in outputs[1]:
        assert outputs[2][name] == outputs[1][name], name
    assert b"latin1.txt" in outputs[1]["meta.json"]  # the replaced characters are reported


@pytest.mark.slow
def test_small_blocks_give_the_same_ids_and_counts(tmp_path):
    corpus = _awkward_corpus(tmp_path / "corpus")
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus)))
    prepare(cfg, progress=False, echo=lambda _: None)
    docs = list_documents([str(corpus)])
    tokenizer = Path(cfg.data.dir) / "tokenizer.model"

    def run(workers: int, block_bytes: int) -> list:
        with BlockEncoder(tokenizer, workers, block_bytes) as encoder:
            out: list = []
            for doc, block in encoder.encode(docs):
                if block is None:
                    out.append(("end", doc.name))
                elif out and isinstance(out[-1], list):
                    out[-1].append(block)
                else:
                    out.append([block])
            return out

    whole, pieces = run(1, 1 << 20), run(2, 40)  # 40 bytes: a block is a line or two
    assert len(whole) == len(pieces) == 2 * len(docs)
    for a, b in zip(whole, pieces):
        if isinstance(a, tuple):
            assert a == b
            continue
        assert len(b) > len(a) or sum(x.bytes for x in a) <= 40  # it really was cut up
        assert np.array_equal(np.concatenate([x.ids for x in a]), np.concatenate([x.ids for x in b]))
        for field in ("characters", "bytes", "words", "replaced"):
            assert sum(getattr(x, field) for x in a) == sum(getattr(x, field) for x in b), field


def test_document_blocks_end_at_line_ends(tmp_path):
    path = tmp_path / "d.txt"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)) + b"last")
    blocks = [b.data for b in Document("d", path).blocks(100)]
    assert len(blocks) > 10 and b"".join(blocks) == path.read_bytes()
    assert all(block.endswith(b"\n") for block in blocks[:-1]) and blocks[-1].endswith(b"last")


def test_a_line_longer_than_a_block_stays_whole(tmp_path):
    path = tmp_path / "d.txt"
    path.write_bytes(b"short\n" + b"x" * 9000 + b"\nend\n")
    blocks = [b.data for b in Document("d", path).blocks(100)]
    assert b"".join(blocks) == path.read_bytes()
    assert b"x" * 9000 + b"\n" in blocks[0] + (blocks[1] if len(blocks) > 1 else b"")
    assert all(block.endswith(b"\n") for block in blocks)
