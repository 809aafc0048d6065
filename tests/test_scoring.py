"""lmtrain.scoring and `lmtrain eval` as the literature scores: a split read with the state carried
through contiguous streams (the default) or as zero-state windows, both checked against the
model scored by hand; the out-of-vocabulary count and the perplexity without it; `--set` keys
that eval cannot honour are named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import WORDS, cli, tiny_sections, write_config

# Every test here prepares, fits or runs a benchmark.
pytestmark = pytest.mark.slow


def _split(root: Path, split: str):
    from lmtrain.data.meta import load_prepared
    from lmtrain.data.records import _ids, split_files
    from lmtrain.paths import DataPaths

    data = DataPaths(root / "data")
    stats = load_prepared(data).splits[split]
    files = split_files(data, split, stats.shard_bytes)
    ids = np.fromiter((int(i) for i in _ids(files)), dtype=np.int32)
    assert len(ids) == stats.tokens
    return files, ids


def _nll(model, ids: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """NLL of ids[lo+1 : hi+1] given ids[lo : hi], one stream from a zero state, scored by hand."""
    targets = ids[lo + 1:hi + 1]
    inputs = ids[lo:lo + len(targets)]
    nll, _ = model.sequence_nll(inputs[None], targets[None], model.zero_state(1))
    return nll.numpy()[0].astype(np.float64)


def test_a_split_is_scored_as_streams_with_the_state_carried_or_as_windows(trained, monkeypatch):
    from lmtrain import scoring

    model, root = trained["lm"].model, trained["root"]
    files, ids = _split(root, "valid")
    monkeypatch.setattr(scoring, "MIN_STREAM_TOKENS", 40)  # several streams in a tiny split
    batch, seq_len = 4, 8
    rows, window = scoring.eval_layout(len(ids), seq_len, batch)
    assert 1 < rows <= batch and window * rows >= max(batch * seq_len, scoring.MIN_CALL_TOKENS)

    carried = scoring.split_nll(model, files, seq_len, batch, len(ids))
    length = math.ceil((len(ids) - 1) / rows)  # each stream's inputs, from its own zero state
    by_hand = sum(_nll(model, ids, r * length, (r + 1) * length).sum() for r in range(rows))
    assert carried.streams == rows and carried.tokens == len(ids) - 1
    assert carried.nll == pytest.approx(by_hand, rel=1e-5)
    assert "carried through" in carried.how

    windows = scoring.split_nll(model, files, seq_len, batch, len(ids), windows=True)
    by_hand = sum(_nll(model, ids, k, k + seq_len).sum() for k in range(0, len(ids) - 1, seq_len))
    assert windows.streams is None and windows.tokens == len(ids) - 1
    assert windows.nll == pytest.approx(by_hand, rel=1e-5)
    assert windows.how == "windows of 8 tokens from a zero state"
    assert windows.unk_tokens == carried.unk_tokens == np.count_nonzero(ids[1:] == 0)


@pytest.mark.slow
def test_eval_split_matches_eval_text_and_counts_out_of_vocabulary_words(tmp_path):
    # Word level, every word seen twice kept (min_count 2): the rest of the training words and
    # the test words training never saw are <unk>, one each.
    rng = np.random.default_rng(0)
    def lines(n, extra):
        return "\n".join(" ".join(rng.choice(WORDS + extra, size=rng.integers(3, 9))) for _ in range(n)) + "\n"
    corpus = {}
    for split, n, extra in (("train", 400, []), ("valid", 60, []), ("test", 80, ["never", "seen"])):
        (tmp_path / f"{split}.txt").write_text(lines(n, extra) + ("rare1 rare2 rare3\n" if split == "train" else ""))
        corpus[split] = str(tmp_path / f"{split}.txt")
    cfg = write_config(tmp_path / "c.yaml", tiny_sections(
        tmp_path, tmp_path, data={"corpus": corpus, "valid_fraction": None, "test_fraction": None},
        tokenizer={"vocab_size": None, "min_count": 2}, train={"max_steps": 30}))
    prepared = cli("prepare", cfg, "-q")
    assert prepared.exit_code == 0, prepared.output
    assert "<unk> 0.0" in prepared.output and "test" in prepared.output  # each split's out-of-vocabulary rate
    assert cli("fit", cfg, "-q").exit_code == 0

    split = cli("eval", cfg, "--split", "test", "--json", "-q")
    text = cli("eval", cfg, "--text", tmp_path / "test.txt", "--json")
    assert split.exit_code == 0 and text.exit_code == 0, split.output + text.output
    s, t = (json.loads(r.output.strip().splitlines()[-1]) for r in (split, text))
    assert s["scoring"] == "state carried through 1 stream(s)" and t["tokens"] == s["tokens"] + 1
    assert abs(s["perplexity"] / t["perplexity"] - 1) < 0.005  # the bar: within 0.5%
    words = (tmp_path / "test.txt").read_text().split()
    unknown = words.count("never") + words.count("seen")
    assert s["oov_tokens"] == t["oov_tokens"] == unknown > 0

    import lmtrain

    scores = lmtrain.load(tmp_path / "run").score((tmp_path / "test.txt").read_text())
    nll = np.array([-x.log_prob for x in scores])
    unk = np.array([x.id == 0 for x in scores])
    assert t["perplexity_without_oov"] == pytest.approx(math.exp(nll[~unk].mean()), rel=1e-6)
    assert t["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-6)

    windows = cli("eval", cfg, "--split", "test", "--windows", "-q")
    assert windows.exit_code == 0 and "(windows of 8 tokens from a zero state)" in windows.output
    assert "out of vocabulary (<unk>): " in windows.output and "perplexity without them" in windows.output

    # Keys the trained run fixed are named, not dropped without a word; keys eval reads are not.
    notice = cli("eval", cfg, "-q", "--set", "model.hidden_dim=99", "--set", "train.stateful=true",
                 "--set", "train.eval_windows=true")
    assert notice.exit_code == 0, notice.output
    assert notice.output.count("--set model.hidden_dim=99 is not used") == 1  # once, whatever reads the run
    assert ("notice: --set model.hidden_dim=99 is not used: `lmtrain eval` takes model.hidden_dim from the "
            f"trained run in {tmp_path / 'run'}, which has 24") in notice.output
    assert "notice: --set train.stateful=true is not used" in notice.output and "which has false" in notice.output
    assert "eval_windows" not in notice.output and "windows of 8 tokens" in notice.output
    gen = cli("generate", cfg, "--max-tokens", "3", "--set", "model.num_layers=3")
    assert gen.exit_code == 0 and "notice: --set model.num_layers=3 is not used" in gen.output
