"""`lmtrain export`: the SavedModel loads in a process without lmtrain, and every signature matches the model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from helpers import cli

# Every test here prepares, fits or runs a benchmark.
pytestmark = pytest.mark.slow

TEXT = "the king and the queen\nsweet night come\n"


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
    r = cli("export", str(cfg), "--out", str(out_dir))
    assert r.exit_code == 0, r.output
    assert (out_dir / "saved_model.pb").is_file() and (out_dir / "assets" / "tokenizer.model").is_file()

    rows = [lm.tokenizer.encode_document(TEXT)[:-1], lm.tokenizer.encode_text("sweet night")]
    lengths = np.array([len(r) for r in rows], np.int32)
    tokens = np.zeros((2, lengths.max()), np.int32)  # right-padded
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
    np.savez(tmp_path / "in.npz", tokens=tokens, lengths=lengths)
    paths = [str(out_dir), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")]
    child = subprocess.run([sys.executable, "-c", CHILD, *paths],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    meta = json.loads(child.stdout.strip().splitlines()[-1])
    assert meta == {"vocab_size": lm.vocab_size, "num_layers": 2, "hidden_dim": 24, "state_width": 24, "eos_id": 1,
                    "newline_id": 2, "unk_id": 0}
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


def test_a_projected_lstm_exports_its_narrow_state_in_both_formats(tmp_path, corpus):
    """model.proj_size: every way out carries h of width P (c keeps hidden_dim), and the steps of
    the SavedModel and of the LiteRT file give the model's own scores."""
    from helpers import tiny_sections, write_config

    import lmtrain

    cfg = write_config(tmp_path / "c.yaml", tiny_sections(tmp_path, corpus, model={"num_layers": 2, "proj_size": 8}))
    for verb in ("prepare", "fit"):
        assert cli(verb, cfg, "-q").exit_code == 0
    litert = ("--format", "litert", "--quantize", "none", "--out", tmp_path / "lite")
    for args in (("--out", tmp_path / "saved"), litert):
        r = cli("export", cfg, "-q", *args)
        assert r.exit_code == 0, r.output
    lm = lmtrain.load(tmp_path / "run")
    ids = lm.tokenizer.encode_text("the king sword crown")
    want = np.array([t.log_prob for t in lm.score("the king sword crown")])[:len(ids)]
    saved = tf.saved_model.load(str(tmp_path / "saved"))
    state = saved.zero_state(tf.constant(1))
    assert state["h"].shape == (2, 1, 8) and state["c"].shape == (2, 1, 24)
    assert int(saved.metadata()["state_width"]) == 8
    info = json.loads((tmp_path / "lite" / "lmtrain.json").read_text())
    assert info["state_width"] == 8 and info["signatures"]["step"]["inputs"]["h"] == "[2, B, 8] float32"
    from ai_edge_litert.interpreter import Interpreter

    lite = Interpreter(model_path=str(tmp_path / "lite" / "model.tflite"))
    lite_step = lite.get_signature_runner("step")
    lite_state = lite.get_signature_runner("zero_state")(batch_size=np.array(1, np.int32))
    h, c, previous, got = state["h"], state["c"], 1, []  # </s> starts a document
    for token in ids:
        out = saved.step(tf.constant([previous], tf.int32), h, c)
        lite_state = lite_step(token=np.array([previous], np.int32), h=lite_state["h"], c=lite_state["c"])
        h, c = out["h"], out["c"]
        got.append((float(out["log_probs"][0, token]), float(lite_state["log_probs"][0, token])))
        previous = token
    np.testing.assert_allclose(np.array(got)[:, 0], want, atol=1e-5)
    np.testing.assert_allclose(np.array(got)[:, 1], want, atol=1e-4)
