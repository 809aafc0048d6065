"""Using a trained model: the Python API, `eval --text`, and the SavedModel export."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

import lmtrain
from lmtrain.cli import app
from lmtrain.tokenizer import EOS_ID

from conftest import tiny_sections, write_config, write_corpus

runner = CliRunner()
TEXT = "the king and the queen\nsweet night come\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    corpus = write_corpus(root / "corpus")
    cfg = write_config(root / "c.yaml", tiny_sections(root, corpus, model={"num_layers": 2}))
    for verb in ("prepare", "fit"):
        r = runner.invoke(app, [verb, str(cfg), "-q"])
        assert r.exit_code == 0, r.output
    return {"config": cfg, "root": root, "lm": lmtrain.load(root / "run")}


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
    step = lm.model.compiled_step()
    state = lm.model.zero_state(1)
    previous, stepped = EOS_ID, []
    for token in ids:
        out, state = step(tf.constant([[previous]], tf.int32), state)
        stepped.append(float(out[0, token]))
        previous = token
    np.testing.assert_allclose(stepped, log_probs, rtol=1e-5, atol=1e-5)


def test_eval_text_from_a_file_and_from_stdin(trained, tmp_path):
    lm, cfg = trained["lm"], trained["config"]
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    r = runner.invoke(app, ["eval", str(cfg), "--text", str(path), "--json"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.output.strip().splitlines()[-1])
    assert metrics["split"] == "text" and metrics["step"] == 12
    assert metrics["tokens"] == len(lm.tokenizer.encode_document(TEXT))
    assert metrics["perplexity"] == pytest.approx(lm.perplexity(TEXT), rel=1e-9)
    assert metrics["bits_per_byte"] == pytest.approx(
        -sum(s.log_prob for s in lm.score(TEXT)) / math.log(2) / len(TEXT.encode()), rel=1e-9)

    piped = runner.invoke(app, ["eval", str(cfg), "--text", "-", "--json"], input=TEXT)
    assert piped.exit_code == 0, piped.output
    assert json.loads(piped.output.strip().splitlines()[-1]) == metrics

    missing = runner.invoke(app, ["eval", str(cfg), "--text", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 1 and "error: --text:" in missing.output and "nope.txt" in missing.output
    assert "Traceback" not in missing.output


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
    cli = runner.invoke(app, ["generate", str(trained["config"]), "--prompt", prompt, "--max-tokens", "25",
                              "--seed", "1", "--ignore-eos"])
    assert cli.exit_code == 0, cli.output
    assert cli.output == str(short) + "\n"


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
    cli = runner.invoke(app, ["generate", str(trained["config"]), "--prompt", "the king", "--max-tokens", "30",
                              "--seed", "4", "--num-samples", "3"])
    assert cli.exit_code == 0, cli.output
    assert cli.output == "".join(f"--- sample {i}/3 ---\n{g.text}\n" for i, g in enumerate(many, 1))
    bad = runner.invoke(app, ["generate", str(trained["config"]), "--num-samples", "0"])
    assert bad.exit_code == 1 and "--num-samples: must be >= 1, got 0" in bad.output


CHILD = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    import sentencepiece as spm
    m = tf.saved_model.load(sys.argv[1])
    inputs = np.load(sys.argv[2])
    tokens, lengths = inputs["tokens"], inputs["lengths"]
    out = {"next": m.next_token(tokens, lengths)["log_probs"].numpy(),
           "score": m.score(tokens[:1, :lengths[0]])["log_probs"].numpy()[0]}
    meta = {k: int(v) for k, v in m.metadata().items()}
    state = m.zero_state(tf.constant(1))
    h, c = state["h"], state["c"]
    previous, stepped = meta["eos_id"], []
    for t in tokens[0, :lengths[0]]:
        o = m.step(tf.constant([previous], tf.int32), h, c)
        h, c = o["h"], o["c"]
        stepped.append(float(o["log_probs"][0, t]))
        previous = int(t)
    out["stepped"] = np.array(stepped)
    serving = m.signatures["score"](tokens=tf.constant(tokens[:1, :lengths[0]]))["log_probs"].numpy()[0]
    out["signature_score"] = serving
    sp = spm.SentencePieceProcessor(model_file=m.tokenizer_path()["path"].numpy().decode())
    out["pieces"] = np.array(sp.encode("the king"))
    out["lmtrain_imported"] = np.array("lmtrain" in sys.modules)
    np.savez(sys.argv[3], **out)
    print(json.dumps(meta))
''')


def test_export_loads_in_plain_tensorflow_and_matches(trained, tmp_path):
    lm, cfg = trained["lm"], trained["config"]
    out_dir = tmp_path / "export"
    r = runner.invoke(app, ["export", str(cfg), "--out", str(out_dir)])
    assert r.exit_code == 0, r.output
    assert (out_dir / "saved_model.pb").is_file() and (out_dir / "assets" / "tokenizer.model").is_file()

    rows = [lm.tokenizer.encode_document(TEXT)[:-1], lm.tokenizer.encode_text("sweet night")]
    lengths = np.array([len(r) for r in rows], np.int32)
    tokens = np.zeros((2, lengths.max()), np.int32)  # right-padded
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
    np.savez(tmp_path / "in.npz", tokens=tokens, lengths=lengths)
    child = subprocess.run([sys.executable, "-c", CHILD, str(out_dir), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    meta = json.loads(child.stdout.strip().splitlines()[-1])
    assert meta == {"vocab_size": lm.vocab_size, "num_layers": 2, "hidden_dim": 24, "eos_id": 1, "newline_id": 2,
                    "unk_id": 0}
    got = np.load(tmp_path / "out.npz")
    assert not bool(got["lmtrain_imported"])
    assert got["pieces"].tolist() == lm.tokenizer.encode_lines(["the king"])[0][:-1]

    # next-token distributions against the in-process model, row by row (no padding there)
    for i, row in enumerate(rows):
        expected = tf.nn.log_softmax(lm.model.logits(lm.model(tf.constant([row]))[:, -1])).numpy()[0]
        np.testing.assert_allclose(got["next"][i], expected, rtol=1e-5, atol=1e-5)
    # per-token scores against the API, and stepping one token at a time against scoring whole
    api = np.array([s.log_prob for s in lm.score(TEXT)])[:-1]
    np.testing.assert_allclose(got["score"], api, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["signature_score"], got["score"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["stepped"], got["score"], rtol=1e-5, atol=1e-5)
