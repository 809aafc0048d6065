"""`lmtrain export --format litert`: the file holds builtin ops only, runs in the LiteRT
interpreter without TensorFlow or lmtrain, gives the model's log-probabilities, stores a tied
matrix once, and bad input ends in one line with nothing half-written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_clean_error, cli

TEXT = "the king and the queen\nsweet night come\n"
README = Path(__file__).resolve().parents[1] / "README.md"
# What a one-token LSTM step may use: no WHILE, no TensorList, no Flex (custom) op.
BUILTINS = {"ADD", "CONCATENATION", "DEQUANTIZE", "FILL", "FULLY_CONNECTED", "GATHER", "LOGISTIC", "LOG_SOFTMAX",
            "MUL", "PACK", "SPLIT", "TANH", "TOPK_V2", "UNPACK", "RESHAPE", "STRIDED_SLICE", "CAST", "SHAPE"}

# A process with the LiteRT interpreter, numpy and SentencePiece only, as on a device.
CHILD = textwrap.dedent('''
    import json, sys
    import numpy as np
    import sentencepiece as spm
    from ai_edge_litert.interpreter import Interpreter
    folder, text = sys.argv[1], sys.argv[2]
    it = Interpreter(model_path=folder + "/model.tflite", num_threads=1)
    step = it.get_signature_runner("step")
    state = it.get_signature_runner("zero_state")(batch_size=np.array(1, np.int32))
    sp = spm.SentencePieceProcessor(model_file=folder + "/tokenizer.model")
    info = json.load(open(folder + "/lmtrain.json"))
    ids = [i for line in text.splitlines() for i in sp.encode(line) + [info["newline_id"]]] + [info["eos_id"]]
    previous, log_probs, top = info["eos_id"], [], []
    for token in ids:
        out = step(token=np.array([previous], np.int32), h=state["h"], c=state["c"])
        state = out
        log_probs.append(float(out["log_probs"][0, token]))
        top.append([out["top_ids"][0].tolist(), np.argsort(-out["log_probs"][0])[:3].tolist()])
        previous = token
    print(json.dumps({"ids": ids, "log_probs": log_probs, "top": top,
                      "tensorflow": "tensorflow" in sys.modules, "lmtrain": "lmtrain" in sys.modules}))
''')


def export(cfg: Path, out: Path, *args: str):
    return cli("export", str(cfg), "--format", "litert", "--out", str(out), *args)


def arrays_of_shape(content: bytes, shape: list[int]) -> list[dict]:
    from lmtrain.use.litert import stored_arrays

    return [a for a in stored_arrays(content) if a["shape"] == shape]


@pytest.mark.parametrize("quantize", ["none", "float16", "int8"])
def test_litert_file_runs_without_tensorflow_and_gives_the_models_log_probs(trained, tmp_path, quantize):
    lm, cfg = trained["lm"], trained["config"]
    out = tmp_path / "phone"
    r = export(cfg, out, "--quantize", quantize)
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == {"model.tflite", "tokenizer.model", "lmtrain.json"}
    info = json.loads((out / "lmtrain.json").read_text())
    assert info["format"] == "litert" and info["quantize"] == quantize and info["step"] == lm.step
    assert set(info["ops"]) <= BUILTINS, info["ops"]
    assert "FULLY_CONNECTED" in info["ops"] and "TOPK_V2" in info["ops"]
    check = info["check"]
    assert check["tokens"] > 50 and "valid split" in check["source"]
    assert abs(check["model_perplexity"] - lm.evaluate(TEXT).perplexity) > 0  # measured, not copied
    assert f"{check['perplexity']:.2f}" in r.output and f"{check['model_perplexity']:.2f}" in r.output
    if quantize == "none":
        assert check["max_difference"] <= 1e-4
        assert check["perplexity"] == pytest.approx(check["model_perplexity"], rel=1e-4)
    else:  # quantized weights move the numbers, a little
        assert 0 < check["max_difference"] < 1.0
        assert check["perplexity"] == pytest.approx(check["model_perplexity"], rel=0.05)
    # The embedding and the tied output matrix: one [V, E] array in the file, at every precision.
    (matrix,) = arrays_of_shape((out / "model.tflite").read_bytes(), [lm.vocab_size, lm.model.embedding_dim])
    small = matrix["shape"][0] * matrix["shape"][1] < 1024  # the converter leaves such arrays in float32
    assert matrix["type"] == {"none": "float32", "float16": "float16", "int8": "float32" if small else "int8"}[quantize]

    child = subprocess.run([sys.executable, "-c", CHILD, str(out), TEXT], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])
    assert not got["tensorflow"] and not got["lmtrain"]
    scores = lm.score(TEXT)
    assert got["ids"] == [s.id for s in scores]
    tol = 1e-4 if quantize == "none" else 0.5
    np.testing.assert_allclose(got["log_probs"], [s.log_prob for s in scores], atol=tol, rtol=0)
    for top_ids, by_sort in got["top"]:
        assert top_ids == by_sort


def test_litert_export_replaces_its_own_and_refuses_anything_else(trained, tmp_path):
    cfg = trained["config"]
    out = tmp_path / "phone"
    assert export(cfg, out, "--top-k", "0").exit_code == 0
    first = (out / "model.tflite").read_bytes()
    assert "top_ids" not in json.loads((out / "lmtrain.json").read_text())["signatures"]["step"]["outputs"]
    r = export(cfg, out, "--quantize", "none", "-q")  # an earlier export: replaced as a whole
    assert r.exit_code == 0, r.output
    assert (out / "model.tflite").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phone"]  # no temporary left behind

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert_clean_error(export(cfg, mine), 1, str(mine), "not an lmtrain export")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    a_file = tmp_path / "lm.tflite"
    a_file.write_text("keep me")
    assert_clean_error(export(cfg, a_file), 1, str(a_file), "not an lmtrain export")
    assert a_file.read_text() == "keep me"
    # The SavedModel export keeps to the same rule.
    assert_clean_error(cli("export", str(cfg), "--out", str(mine)), 1, str(mine))
    assert (mine / "notes.txt").read_text() == "keep me"


def test_litert_export_bad_options_and_missing_run_are_one_line(trained, tmp_path):
    cfg = trained["config"]
    out = tmp_path / "phone"
    assert_clean_error(cli("export", str(cfg), "--format", "tflite", "--out", str(out)), 2, "--format tflite",
                       "savedmodel, litert")
    assert_clean_error(export(cfg, out, "--quantize", "int4"), 2, "--quantize int4", "none, float16, int8")
    assert_clean_error(cli("export", str(cfg), "--quantize", "int8", "--out", str(out)), 2, "--quantize int8",
                       "litert")
    assert_clean_error(export(cfg, out, "--top-k", "100000"), 1, "--top-k 100000", "vocabulary")
    empty = tmp_path / "no-run"
    assert_clean_error(export(cfg, out, "--set", f"train.run_dir={empty}"), 1, str(empty))
    assert not out.exists()


def test_untied_stacked_model_converts_and_matches(tmp_path):
    """The library path without a run: an untied two-layer model keeps two [V, D] matrices, int8
    scales them per row, and the float file computes the model's function."""
    from lmtrain.config.resolve import resolve
    from lmtrain.config.schema import Config, ModelConfig
    from lmtrain.model import LanguageModel
    from lmtrain.use import litert

    config = resolve(Config(model=ModelConfig(embedding_dim=12, hidden_dim=16, num_layers=2, tie_weights=False)), 1)
    model = LanguageModel(config.model, 100, output_bias=np.linspace(-2, 1, 100, dtype=np.float32))
    model.build(None)
    ids = np.random.default_rng(1).integers(0, 100, 40)
    for quantize in ("none", "int8"):
        content = litert.convert(model, quantize, top_k=5)
        assert set(litert.operators(content)) <= BUILTINS
        checked = litert.check(content, model, ids, "random ids", text=False)
        assert checked.perplexity is None and checked.tokens == 40
        if quantize == "none":
            assert checked.max_difference <= 1e-4
        (embedding,) = arrays_of_shape(content, [100, 12])
        (output,) = arrays_of_shape(content, [100, 16])
        if quantize == "int8":  # untied: one scale for the looked-up table, one per row for the output layer
            got = (embedding["type"], embedding["scales"], output["type"], output["scales"])
            assert got == ("int8", 1, "int8", 100)
    zero_state = litert.interpreter(litert.convert(model)).get_signature_runner("zero_state")
    zero = zero_state(batch_size=np.array(3, np.int32))
    assert zero["h"].shape == (2, 3, 16) and not zero["c"].any()
    with pytest.raises(ValueError, match="quantize"):
        litert.convert(model, "int4")


def test_readme_device_snippet_predicts_three_words(trained, tmp_path):
    """The README's "On the device" Python block, run as written against a tiny export."""
    block = re.search(r"## On the device.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    out = tmp_path / "runs" / "demo" / "litert"
    out.parent.mkdir(parents=True)
    assert export(trained["config"], out).exit_code == 0
    child = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    words = child.stdout.split()
    assert len(words) == 3, child.stdout
