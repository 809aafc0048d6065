import numpy as np

from lmtrain import records
from lmtrain.paths import DataPaths
from lmtrain.records import ShardWriter, eval_dataset, num_windows, windows


def _write(tmp_path, tokens, shard_tokens, monkeypatch, record_tokens=7):
    monkeypatch.setattr(records, "RECORD_TOKENS", record_tokens)
    paths = DataPaths(tmp_path)
    writer = ShardWriter(paths, "train", shard_tokens)
    for start in range(0, len(tokens), 5):
        writer.write(tokens[start:start + 5])
    return paths, writer.close()


def test_windows_predict_every_token_once(tmp_path, monkeypatch):
    tokens = list(range(3, 54))  # 51 ids
    paths, shards = _write(tmp_path, tokens, shard_tokens=20, monkeypatch=monkeypatch)
    assert shards == len(paths.shards("train")) == 3
    rows = [tuple(t.numpy() for t in w) for w in windows(paths.shards("train"), 8)]
    assert len(rows) == num_windows(len(tokens), 8)
    inputs = np.concatenate([x[m > 0] for x, y, m in rows])
    targets = np.concatenate([y[m > 0] for x, y, m in rows])
    assert inputs.tolist() == tokens[:-1] and targets.tolist() == tokens[1:]


def test_eval_batches_keep_the_tail(tmp_path, monkeypatch):
    tokens = list(range(1, 30))
    paths, _ = _write(tmp_path, tokens, shard_tokens=1000, monkeypatch=monkeypatch)
    masks = [m.numpy() for _, _, m in eval_dataset(paths.shards("train"), 4, 3)]
    assert sum(float(m.sum()) for m in masks) == len(tokens) - 1
    assert masks[-1].shape[0] == num_windows(len(tokens), 4) % 3 or masks[-1].shape[0] == 3
