"""Sampled vs full softmax on the demo corpus: perplexity, speed, and perplexity against time.

Trains, with `lmtrain`'s own prepare / fit / evaluate (the code the CLI runs), the demo model
for the same number of steps:
  - with the sampled softmax and with the full softmax, at two vocabularies (default: the
    demo's unigram 8k, and a word-level vocabulary of 25k, as large as Shakespeare allows);
  - the same pair again with the regularised recipe (tied weights, warm-up + cosine schedule,
    dropout) at both vocabularies, which also shows what the recipe gains over the plain setup;
  - a `num_sampled` sweep at the large vocabulary.
Every run validates (full softmax) every `--eval-every` steps; the curves come from the runs'
TensorBoard logs, whose events carry their wall-clock time. Writes, under `--out`:
results.md (the table), results.json, and results.png (validation perplexity against
wall-clock time; needs matplotlib: `pip install 'lmtrain[compare]'`). Each finished run also
leaves `<run>.json`; running the command again reuses the runs whose config is unchanged
(`--fresh` retrains them all).

Usage: python benchmarks/compare.py [--steps 1000] [--out runs/compare] [--sweep 256 4096]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lmtrain.config import Config, config_from_dict, load_config  # noqa: E402
from lmtrain.errors import ConfigError  # noqa: E402
from lmtrain.evaluate import evaluate  # noqa: E402
from lmtrain.prepare import prepare  # noqa: E402
from lmtrain.rundir import logged_scalars  # noqa: E402
from lmtrain.train import fit  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
# Bumped when lmtrain's training changes in a way a config does not show, so that earlier
# figures are not reused for it. 2: negatives drawn without replacement (model.sampler_unique,
# whose default a record written before it would otherwise take).
RECORD_VERSION = 2
# The regularised recipe compared with the plain demo setup: tied input and output embeddings
# (projected from the 512-wide LSTM output to 256), the demo's dropout of 0.1 on the embeddings
# and before the output, and a short linear warm-up to twice the demo's rate followed by cosine
# decay to 10% of it (the warm-up is what makes the higher peak rate safe).
RECIPE = ("model.tie_weights=true", "train.schedule=warmup_cosine", "train.warmup_steps=50",
          "train.learning_rate=0.004")


@dataclass
class Run:
    name: str
    vocab: str
    softmax: str
    num_sampled: int | None
    overrides: list[str]
    reference: str = ""  # the full-softmax run a sampled run is measured against
    steps: int = 0
    wall_seconds: float = 0.0
    tokens_per_sec: float = 0.0
    valid: float = math.nan
    test: float = math.nan
    curve: list[tuple[float, int, float]] = field(default_factory=list)  # (seconds, step, valid ppl)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=DEMO, help="Base config (default: the demo's).")
    p.add_argument("--corpus", default=None, help="Override data.corpus (default: the config's).")
    p.add_argument("--small", default="unigram:8000", help="Small vocabulary as model_type:size.")
    p.add_argument("--large", default="word:25000", help="Large vocabulary as model_type:size.")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--sweep", type=int, nargs="*", default=[256, 4096], help="Extra num_sampled values (large vocab).")
    p.add_argument("--recipe", nargs="*", default=list(RECIPE),
                   help="Overrides of the regularised recipe, run at both vocabularies with both softmaxes "
                   "(none: no recipe runs).")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="Extra config override (repeatable).")
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument("--only", nargs="+", metavar="RUN", help="Train only these runs (e.g. large-full); the others "
                   "are reused when unchanged and otherwise left out of the table.")
    p.add_argument("--fresh", action="store_true", help="Train every run again, even if its config is unchanged "
                   "(after changing lmtrain's code, say).")
    args = p.parse_args()

    base = [f"train.max_steps={args.steps}", "train.epochs=1000", f"train.eval_every={args.eval_every}",
            f"train.checkpoint_every={args.steps}", *args.overrides]
    if args.corpus:
        base.append(f"data.corpus={args.corpus}")
    config = load_config(args.config, base)
    default_sampled = config.model.num_sampled
    runs: list[Run] = []
    for label, spec in (("small", args.small), ("large", args.large)):
        kind, size = spec.split(":")
        vocab = [f"tokenizer.model_type={kind}", f"tokenizer.vocab_size={size}", f"data.dir={args.out / ('data-' + label)}"]
        setups = [("", [])] + ([("-recipe", args.recipe)] if args.recipe else [])
        for suffix, extra in setups:
            full = f"{label}-full{suffix}"
            runs.append(Run(f"{label}-sampled{suffix}", spec, "sampled", default_sampled, vocab + extra, full))
            runs.append(Run(full, spec, "full", None, vocab + extra + ["model.softmax=full"]))
        if label == "large":
            for k in args.sweep:
                runs.append(Run(f"large-sampled-{k}", spec, "sampled", k, vocab + [f"model.num_sampled={k}"],
                                "large-full"))

    unknown = sorted(set(args.only or []) - {r.name for r in runs})
    if unknown:
        p.error(f"--only: no run named {', '.join(unknown)} (runs: {', '.join(r.name for r in runs)})")
    args.out.mkdir(parents=True, exist_ok=True)
    done: list[Run] = []
    for run in runs:
        cfg = load_config(args.config, base + run.overrides + [f"train.run_dir={args.out / run.name}"])
        if args.only and run.name not in args.only:
            if not reuse(run, cfg):
                print(f"{run.name}: not in --only and no earlier figures; left out", flush=True)
                continue
        elif args.fresh or not reuse(run, cfg):
            train(run, cfg)
        print(f"{run.name}: valid {run.valid:.2f} test {run.test:.2f} {run.tokens_per_sec:,.0f} tok/s "
              f"{run.wall_seconds:.0f}s", flush=True)
        done.append(run)
    report(done, args)


def _record_path(cfg: Config) -> Path:
    return Path(cfg.train.run_dir).with_suffix(".json")


def reuse(run: Run, cfg: Config) -> bool:
    """Take a run's figures from an earlier invocation when it trained the very same config, so an
    interrupted or extended comparison (an hour or more on 2 cores) redoes only what changed."""
    try:
        record = json.loads(_record_path(cfg).read_text())
    except (OSError, ValueError):
        return False
    if record.get("version") != RECORD_VERSION:
        return False
    try:  # read back through the config loader: keys added to lmtrain since take their defaults
        same = config_from_dict(record["config"]) == cfg
    except (ConfigError, KeyError, TypeError):
        same = False
    if not same:
        return False
    for key, value in record["run"].items():
        setattr(run, key, [tuple(p) for p in value] if key == "curve" else value)
    print(f"{run.name}: same config as {_record_path(cfg)}, reusing its figures", flush=True)
    return True


def train(run: Run, cfg: Config) -> None:
    prepare(cfg, progress=False, echo=lambda _: None)
    started = time.time()
    result = fit(cfg, force=True, progress=False, echo=lambda _: None)
    run.steps, run.wall_seconds = result.step, result.wall_seconds
    run.tokens_per_sec = result.tokens_per_sec or 0.0
    run.valid = evaluate(cfg, "valid", progress=False).perplexity
    run.test = evaluate(cfg, "test", progress=False).perplexity
    run.curve = validation_curve(Path(cfg.train.run_dir) / "logs", started)
    record = {"version": RECORD_VERSION, "config": dataclasses.asdict(cfg), "run": dataclasses.asdict(run)}
    _record_path(cfg).write_text(json.dumps(record, indent=1, default=str))


def validation_curve(logs: Path, started: float) -> list[tuple[float, int, float]]:
    """(seconds since fit started, step, validation perplexity) from the run's event files."""
    return [(t - started, step, ppl) for t, step, ppl in logged_scalars(logs, "valid/perplexity")]


def best_by(curve: list[tuple[float, int, float]], seconds: float) -> float:
    """Best validation perplexity a run had reached `seconds` after it started (inf if none yet)."""
    seen = [ppl for t, _, ppl in curve if t <= seconds]
    return min(seen) if seen else math.inf


def report(runs: list[Run], args: argparse.Namespace) -> None:
    by_name = {r.name: r for r in runs}
    lines = [
        f"{args.steps} steps each; validation every {args.eval_every} steps; perplexities with the full softmax.",
        "",
        "| run | vocabulary | softmax | num_sampled | valid ppl | test ppl | test vs full | tokens/s | fit wall time |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        gap = f"{100 * (r.test / by_name[r.reference].test - 1):+.1f}%" if r.reference in by_name else ""
        lines.append(f"| {r.name} | {r.vocab} | {r.softmax} | {r.num_sampled or '-'} | {r.valid:.2f} | {r.test:.2f} | "
                     f"{gap} | {r.tokens_per_sec:,.0f} | {r.wall_seconds:.0f} s |")
    if args.recipe:
        lines += ["", f"Recipe: {' '.join(args.recipe)}. Test perplexity against the plain demo setup:"]
        for name in ("small-sampled", "small-full", "large-sampled", "large-full"):
            if name not in by_name or f"{name}-recipe" not in by_name:
                continue
            base, recipe = by_name[name], by_name[f"{name}-recipe"]
            lines.append(f"- {name}: {recipe.test:.2f} with the recipe vs {base.test:.2f} "
                         f"({100 * (recipe.test / base.test - 1):+.1f}%)")
    lines += ["", "Equal wall-clock time at the large vocabulary:"]
    for suffix in ("", "-recipe") if args.recipe else ("",):
        if f"large-sampled{suffix}" not in by_name or f"large-full{suffix}" not in by_name:
            continue
        sampled, full = by_name[f"large-sampled{suffix}"], by_name[f"large-full{suffix}"]
        lines.append(f"- large-sampled{suffix} finished in {sampled.wall_seconds:.0f} s with a best validation "
                     f"perplexity of {best_by(sampled.curve, math.inf):.2f}; large-full{suffix}'s best by then was "
                     f"{best_by(full.curve, sampled.wall_seconds):.2f}.")
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps([r.__dict__ for r in runs], indent=1))
    print(text)
    plot(runs, args.out / "results.png")


def plot(runs: list[Run], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'lmtrain[compare]'): no plot written")
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, label in zip(axes, ("small", "large")):
        for r in runs:
            if r.name.startswith(label) and r.curve:
                ax.plot([p[0] for p in r.curve], [p[2] for p in r.curve], marker="o", markersize=3, label=r.name,
                        linestyle="--" if r.name.endswith("-recipe") else "-")
        ax.set_title(f"{label} vocabulary ({next(r.vocab for r in runs if r.name.startswith(label))})")
        ax.set_xlabel("wall-clock seconds since fit started")
        ax.set_ylabel("validation perplexity (full softmax)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
