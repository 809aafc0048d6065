"""On the device: `lmtrain export --format litert` files, their size, step latency and perplexity.

Trains two models with `lmtrain prepare` + `lmtrain fit` (the CLI, in a subprocess; finished runs
are reused) on the demo corpus:
  demo      configs/demo.yaml as it is (unigram 8k, E 256, one 512-unit LSTM projected to 256, tied)
  keyboard  the shape of a phone keyboard's LM: word level, 10k words, E 96, one 670-unit LSTM
            tied through a projection to 96 (every other key the demo's)
then exports each with `TrainedModel.export_litert` (what `lmtrain export --format litert` runs)
at quantize none / float16 / int8, and, with TensorFlow and the interpreter both on one thread:
  file      the .tflite size, and bytes per parameter (a tied matrix counted once)
  step      latency of one `step` call at batch 1 through the interpreter's signature runner
            (from Python, copying the state and the [V] log-probs in and out), p50 and p95
            over `--latency-tokens` calls, the state carried
  ppl       perplexity of the first `--valid-tokens` tokens of the validation split (0: all)
            through the interpreter, one token at a time with the state carried, beside the
            float model's on the same tokens (`lmtrain.use.litert.check`)
and the same step through the SavedModel of `lmtrain export` (`tf.saved_model.load`), the
baseline a server would run. For the keyboard, int8 with per-row scales (the converter's default,
which stores the tied matrix twice) is measured beside lmtrain's choice of one scale per array.
Prints a table and a last line of JSON.

Usage: python benchmarks/device_bench.py [--models demo keyboard] [--valid-tokens 0]
       [--latency-tokens 2000] [--out runs/device-bench] [--set section.key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
KEYBOARD = {"tokenizer": {"model_type": "word", "vocab_size": 10_000},
            "model": {"embedding_dim": 96, "hidden_dim": 670}}
QUANTIZE = ("none", "float16", "int8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml", help="The demo model's config.")
    p.add_argument("--models", nargs="+", default=["demo", "keyboard"], choices=["demo", "keyboard"])
    p.add_argument("--keyboard", nargs=3, type=int, default=None, metavar=("VOCAB", "EMB", "HIDDEN"),
                   help="The keyboard model's word vocabulary and widths (default 10000 96 670).")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="section.key=value for both models (YAML-typed), e.g. a smaller corpus for a test.")
    p.add_argument("--valid-tokens", type=int, default=0, help="Validation tokens scored per file (0: the split).")
    p.add_argument("--latency-tokens", type=int, default=2000)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "device-bench")
    args = p.parse_args()
    if args.keyboard:
        vocab, emb, hidden = args.keyboard
        KEYBOARD["tokenizer"]["vocab_size"], KEYBOARD["model"] = vocab, {"embedding_dim": emb, "hidden_dim": hidden}

    runs = {name: train(name, args) for name in args.models}  # training first: it wants every core

    from lmtrain.keras.tfboot import import_tensorflow

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    results = [row for name, run_dir in runs.items() for row in bench_model(name, run_dir, args)]
    print_table(results, args)
    print(json.dumps({"results": results}))


def train(name: str, args: argparse.Namespace) -> Path:
    """Prepare and fit the model `name` with the CLI; a finished run is left as it is."""
    base = yaml.safe_load(args.config.read_text()) or {}
    if name == "keyboard":
        base["tokenizer"] = {**base.get("tokenizer", {}), **KEYBOARD["tokenizer"]}
        base["model"] = {**base.get("model", {}), **KEYBOARD["model"]}
        base["data"] = {**base.get("data", {}), "dir": str(args.out / "data-keyboard")}
    base["train"] = {**base.get("train", {}), "run_dir": str(args.out / name)}
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / f"{name}.yaml"
    config.write_text(yaml.safe_dump(base, sort_keys=False))
    sets = [a for o in args.overrides for a in ("--set", o)]
    for verb in ("prepare", "fit"):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lmtrain", verb, str(config), "-q", *sets], check=True, cwd=ROOT)
        print(f"{name}: {verb} {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return args.out / name


def bench_model(name: str, run_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    import tensorflow as tf

    import lmtrain
    from lmtrain.use import litert

    lm = lmtrain.load(run_dir)
    model = lm.model
    ids, source, _ = litert.check_tokens(Path(lm.config.data.dir), lm.meta, lm.vocab_size,
                                         args.valid_tokens or lm.meta.splits["valid"].tokens)
    latency_ids = ids[:args.latency_tokens]
    shape = {"model": name, "vocab": lm.vocab_size, "embedding_dim": model.embedding_dim,
             "hidden_dim": model.hidden_dim, "valid_tokens": len(ids), "source": source}

    saved = tf.saved_model.load(str(lm.export(args.out / f"{name}-savedmodel")))
    state = saved.zero_state(tf.constant(1))
    h, c = state["h"], state["c"]
    times = []
    for token in latency_ids:
        started = time.perf_counter()
        out = saved.step(tf.constant([token], tf.int32), h, c)
        h, c = out["h"], out["c"]
        out["log_probs"].numpy()
        times.append(time.perf_counter() - started)
    rows = [{**shape, "format": "SavedModel", "quantize": "float32 (TensorFlow)", **latency(times)}]

    variants = [(q, None) for q in QUANTIZE] + ([("int8", True)] if name == "keyboard" else [])
    for quantize, per_row in variants:
        label = quantize if per_row is None else "int8, per-row scales"
        if per_row is None:  # the user's path: convert, check, write
            done = lm.export_litert(args.out / f"{name}-litert-{quantize}", quantize)
            content = (done.path / litert.FILE_NAME).read_bytes()
        else:
            content = litert.convert(model, quantize, top_k=3, per_row_scales=per_row)
        parameters = litert.parameter_count(model)
        arrays = litert.stored_arrays(content)
        matrix = next(a for a in arrays if a["shape"][0] == lm.vocab_size and len(a["shape"]) == 2)
        copies = sum(a["shape"] == matrix["shape"] for a in arrays)
        checked = litert.check(content, model, ids, source)
        rows.append({**shape, "format": "LiteRT", "quantize": label, "file_mb": len(content) / 1e6,
                     "parameters": parameters, "bytes_per_parameter": len(content) / parameters,
                     "matrix": f"{matrix['type']} x{copies}", "ops": litert.operators(content),
                     "perplexity": checked.perplexity, "model_perplexity": checked.model_perplexity,
                     "max_difference": checked.max_difference, **interpreter_latency(content, latency_ids)})
    for row in rows:
        row.setdefault("perplexity", rows[1]["model_perplexity"])
    return rows


def interpreter_latency(content: bytes, ids: np.ndarray) -> dict[str, float]:
    from lmtrain.use.litert import interpreter

    it = interpreter(content, threads=1)
    step = it.get_signature_runner("step")
    state = it.get_signature_runner("zero_state")(batch_size=np.array(1, np.int32))
    for token in ids[:20]:  # warm-up
        step(token=np.array([token], np.int32), h=state["h"], c=state["c"])
    times = []
    for token in ids:
        started = time.perf_counter()
        state = step(token=np.array([token], np.int32), h=state["h"], c=state["c"])
        times.append(time.perf_counter() - started)
    return latency(times)


def latency(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds[min(20, len(seconds) // 2):]) * 1e3  # the first calls trace or allocate
    return {"step_p50_ms": float(np.percentile(ms, 50)), "step_p95_ms": float(np.percentile(ms, 95))}


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print("\n| model | format | weights | file MB | bytes / param | tied matrix | step p50 ms | p95 ms "
          "| valid ppl | vs the float model |")
    print("|---|---|---|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        base = r.get("model_perplexity") or r["perplexity"]
        size = (f"{r['file_mb']:.2f} | {r['bytes_per_parameter']:.2f} | {r['matrix']}" if "file_mb" in r
                else "— | — | —")
        shape = f"{r['model']} (V {r['vocab']:,}, E {r['embedding_dim']}, H {r['hidden_dim']})"
        print(f"| {shape} | {r['format']} | {r['quantize']} | {size} | {r['step_p50_ms']:.3f} | {r['step_p95_ms']:.3f} "
              f"| {r['perplexity']:.2f} | {(r['perplexity'] / base - 1) * 100:+.2f}% |")
    scored = {r["model"]: f"{r['source']} ({r['valid_tokens']:,} tokens)" for r in results}
    print(f"\nbatch 1, one thread (TensorFlow and the interpreter); perplexity one token at a time with the state "
          f"carried, over {'; '.join(f'{m}: {s}' for m, s in scored.items())}; the operators of every file: "
          f"{', '.join(sorted({op for r in results for op in r.get('ops', [])}))}")


if __name__ == "__main__":
    main()
