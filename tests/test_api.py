"""lmtrain.load: scoring, perplexity and stepwise decoding agree; generation's cost and streams; the CLI gives "
  "what the API gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from helpers import cli

from lmtrain.data.tokenizer import EOS_ID

# Every test here prepares, fits or runs a benchmark.
pytestmark = pytest.mark.slow

TEXT = "the king and the queen\nsweet night come\n"


def test_score_perplexity_and_stepwise_decoding_agree(trained):
    lm = trained["lm"]
    scores = lm.score(TEXT)
    ids = [s.id for s in scores]
    assert ids == lm.tokenizer.encode_document(TEXT)
    assert [s.token for s in scores][-1] == "</s>" and "<nl>" in [s.token for s in scores]
    log_probs = np.array([s.log_prob for s in scores])
    assert np.all(log_probs < 0)
    assert lm.perplexity(TEXT) == pytest.approx(math.exp(-log_probs.mean()), rel=1e-9)

    # the same numbers, one token at a time with the state carried (what generation does)
    step = tf.function(lm.model.step)
    state = lm.model.zero_state(1)
    previous, stepped = EOS_ID, []
    for token in ids:
        out, state = step(tf.constant([[previous]], tf.int32), state)
        stepped.append(float(out[0, token]))
        previous = token
    np.testing.assert_allclose(stepped, log_probs, rtol=1e-5, atol=1e-5)


def test_generate_asks_for_at_least_one_sample(trained):
    lm = trained["lm"]
    assert len(lm.generate("the king", max_tokens=3, num_samples=2)) == 2
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="num_samples must be a whole number of samples, at least 1"):
            lm.generate("the king", max_tokens=3, num_samples=bad)


def test_generation_cost_grows_linearly(trained):
    lm = trained["lm"]
    prompt = "the king"
    prompt_len = len(lm.tokenizer.encode_text(prompt))
    short = lm.generate(prompt, max_tokens=25, seed=1, ignore_eos=True)
    long = lm.generate(prompt, max_tokens=50, seed=1, ignore_eos=True)
    assert (short.tokens, long.tokens) == (25, 50)
    # the prompt at once, then one LSTM step per new token (the last needs none)
    assert (short.lstm_steps, long.lstm_steps) == (24, 49)
    # ids run through the LSTM: the prompt once, then one per call; re-running the prefix for
    # every token would give P*N + N*(N-1)/2, about 4x for twice the tokens
    assert short.tokens_processed == prompt_len + 24 and long.tokens_processed == prompt_len + 49
    assert long.tokens_processed / short.tokens_processed < 2.0
    # the API and the CLI produce the same text for the same seed
    from_cli = cli("generate", trained["config"], "--prompt", prompt, "--max-tokens", "25", "--seed", "1",
                   "--ignore-eos")
    assert from_cli.exit_code == 0, from_cli.output
    assert from_cli.output == str(short) + "\n"


def test_num_samples_decodes_streams_together(trained):
    lm = trained["lm"]
    many = lm.generate("the king", max_tokens=30, seed=4, num_samples=3)
    assert isinstance(many, list) and len(many) == 3
    assert all(g.text.startswith("the king") and 0 <= g.tokens <= 30 for g in many)
    assert len({g.text for g in many}) > 1  # independent draws per stream
    again = lm.generate("the king", max_tokens=30, seed=4, num_samples=3)
    assert [g.text for g in again] == [g.text for g in many]  # same seed, same texts
    for g in many:  # a stream that reached </s> stopped there, one that did not made 30 tokens
        assert g.tokens == 30 or g.stopped_at_eos
    greedy = lm.generate("the king", max_tokens=10, temperature=0, num_samples=2)
    assert greedy[0].text == greedy[1].text == str(lm.generate("the king", max_tokens=10, temperature=0))
    from_cli = cli("generate", trained["config"], "--prompt", "the king", "--max-tokens", "30", "--seed", "4",
                   "--num-samples", "3")
    assert from_cli.exit_code == 0, from_cli.output
    assert from_cli.output == "".join(f"--- sample {i}/3 ---\n{g.text}\n" for i, g in enumerate(many, 1))
    bad = cli("generate", trained["config"], "--num-samples", "0")
    assert bad.exit_code == 1 and "--num-samples: must be >= 1, got 0" in bad.output


