"""lmtrain.data.records and lmtrain.data.shards: training windows, evaluation batches, stream rows, damaged shards, "
  "TFRecord framing."""

import numpy as np
import pytest
import tensorflow as tf

from lmtrain.data import shards
from lmtrain.data.records import (
    damaged_shard_error,
    eval_dataset,
    num_windows,
    split_files,
    windows,
)
from lmtrain.data.shards import ShardWriter, frame
from lmtrain.errors import LmtrainError
from lmtrain.paths import DataPaths


def _write(tmp_path, tokens, shard_tokens, monkeypatch, record_tokens=7):
    monkeypatch.setattr(shards, "RECORD_TOKENS", record_tokens)
    paths = DataPaths(tmp_path)
    writer = ShardWriter(paths, "train", shard_tokens)
    for start in range(0, len(tokens), 5):
        writer.write(tokens[start:start + 5])
    return paths, writer.close()


def test_windows_predict_every_token_once(tmp_path, monkeypatch):
    tokens = list(range(3, 54))  # 51 ids
    paths, sizes = _write(tmp_path, tokens, shard_tokens=20, monkeypatch=monkeypatch)
    files = split_files(paths, "train", sizes)  # the recorded sizes are the real ones
    assert len(files) == len(list(tmp_path.glob("train-*.tfrecord"))) == 3
    rows = [tuple(t.numpy() for t in w) for w in windows(files, 8)]
    assert len(rows) == num_windows(len(tokens), 8)
    inputs = np.concatenate([x[m > 0] for x, y, m in rows])
    targets = np.concatenate([y[m > 0] for x, y, m in rows])
    assert inputs.tolist() == tokens[:-1] and targets.tolist() == tokens[1:]


def test_eval_batches_keep_the_tail(tmp_path, monkeypatch):
    tokens = list(range(1, 30))
    paths, sizes = _write(tmp_path, tokens, shard_tokens=1000, monkeypatch=monkeypatch)
    masks = [m.numpy() for _, _, m in eval_dataset(split_files(paths, "train", sizes), 4, 3)]
    assert sum(float(m.sum()) for m in masks) == len(tokens) - 1
    assert masks[-1].shape[0] == num_windows(len(tokens), 4) % 3 or masks[-1].shape[0] == 3


def test_truncated_or_missing_shard_is_named_before_reading(tmp_path, monkeypatch):
    paths, sizes = _write(tmp_path, list(range(3, 54)), shard_tokens=20, monkeypatch=monkeypatch)
    second = paths.shard("train", 1)
    second.write_bytes(second.read_bytes()[:-3])
    with pytest.raises(LmtrainError, match=rf"shard {second} is {sizes[1] - 3} bytes but prepare wrote {sizes[1]}"):
        split_files(paths, "train", sizes)
    second.unlink()
    with pytest.raises(LmtrainError, match=rf"shard {second} is missing"):
        split_files(paths, "train", sizes)


def test_corrupted_shard_is_named(tmp_path, monkeypatch):
    paths, sizes = _write(tmp_path, list(range(3, 54)), shard_tokens=20, monkeypatch=monkeypatch)
    third = paths.shard("train", 2)
    raw = bytearray(third.read_bytes())
    raw[20] ^= 0xFF  # a flipped bit inside a record: same size, wrong checksum
    third.write_bytes(bytes(raw))
    files = split_files(paths, "train", sizes)  # sizes alone cannot see it
    with pytest.raises(tf.errors.DataLossError) as err:
        list(windows(files, 8))
    error = damaged_shard_error(files, err.value)
    assert str(third) in str(error) and "corrupted" in str(error) and "prepare --force" in str(error)


def test_stream_rows_read_contiguous_parts(tmp_path, monkeypatch):
    from lmtrain.data.records import stream_rows, stream_windows_per_row

    tokens = list(range(3, 54))  # 51 ids: 50 to predict
    paths, sizes = _write(tmp_path, tokens, shard_tokens=20, monkeypatch=monkeypatch)
    files = split_files(paths, "train", sizes)
    train = [tuple(t.numpy() for t in b) for b in stream_rows(files, len(tokens), 3, 4, full_only=True)]
    assert len(train) == stream_windows_per_row(len(tokens), 3, 4) == 4  # 16 inputs per row
    for row in range(3):
        x = np.concatenate([b[0][row] for b in train])
        y = np.concatenate([b[1][row] for b in train])
        assert x.tolist() == tokens[row * 16: row * 16 + 16] and y.tolist() == tokens[row * 16 + 1: row * 16 + 17]
        assert all(b[2][row].all() for b in train)
    # evaluation: every token predicted exactly once, each row continuing its own part
    full = [tuple(t.numpy() for t in b) for b in stream_rows(files, len(tokens), 3, 4, full_only=False)]
    targets = sorted(int(t) for b in full for t in b[1][b[2] > 0])
    assert targets == tokens[1:]
    row1 = np.concatenate([b[1][1][b[2][1] > 0] for b in full])
    assert row1.tolist() == tokens[18:35]  # 17 targets per row
    # scoring cuts the same batches from the ids in memory (and reads a large split as above)
    from lmtrain.data import records

    for limit in (records.IN_MEMORY_TOKENS, 0):
        monkeypatch.setattr(records, "IN_MEMORY_TOKENS", limit)
        cut = [tuple(np.asarray(t) for t in b) for b in records.stream_batches(files, len(tokens), 3, 4)]
        assert len(cut) == len(full)
        for mine, theirs in zip(cut, full):
            assert [a.dtype for a in mine] == [b.dtype for b in theirs] and mine[2].tolist() == theirs[2].tolist()
            kept = theirs[2] > 0  # what is masked after a row's last target feeds nothing that counts
            assert mine[0][kept].tolist() == theirs[0][kept].tolist()
            assert mine[1][kept].tolist() == theirs[1][kept].tolist()


def test_records_are_framed_exactly_as_tensorflow_frames_them(tmp_path):
    payloads = [b"", b"x", np.arange(70_000, dtype=np.int32).tobytes(), bytes(range(256)) * 3]
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for data in payloads:
            writer.write(data)
    assert b"".join(frame(d) for d in payloads) == (tmp_path / "tf.tfrecord").read_bytes()
