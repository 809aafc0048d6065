"""Sampled vs full softmax on the demo corpus: perplexity at equal steps and at equal time.

Trains, with `lmtrain`'s own prepare / fit / evaluate (the code the CLI runs), the demo model
with the defaults users get, for the same number of steps, with the sampled and with the full
softmax, at three vocabularies (default: a 2k and the demo's 8k unigram vocabulary, and a
word-level vocabulary of 25k, as large as Shakespeare allows):
  - at each, `<label>-sampled` (model.softmax=sampled) against `<label>-full` (full); the
    table marks the one the default model.softmax=auto trains at that vocabulary;
  - a `num_sampled` sweep at the large vocabulary (`--sweep`);
  - with `--plain`, every pair again with the setup the defaults had before 2026-12-02 (untied,
    constant rate 0.002), which shows what today's defaults gain.
  - with `--adaptive`, at each vocabulary the adaptive softmax (benchmarks/adaptive.py: the model
    PyTorch users would pick instead, written in Keras) on the same windows, as a second reference;
    with `--budget` as well, `<label>-sampled-budget`: the sampled run given the adaptive run's
    training time (its max_steps from the sampled run's speed), perplexity per hour;
  - with `--epochs N`, every run trains N whole epochs (max_steps null) instead of `--steps`.
Every run validates (full softmax) every `--eval-every` steps; the curves come from the runs'
TensorBoard logs (`valid/train_seconds`: seconds spent training, validations left out). Each
pair is reported at equal steps (the final perplexities) and at equal training time (each run's
best validation perplexity when the quicker of the two had finished). Times and tokens/s are of
training alone: a full-softmax validation at 60k words costs as much as a third of the training.
Writes, under `--out`: results.md (the tables),
results.json, and results.png (validation perplexity against wall-clock time; needs matplotlib:
`pip install 'lmtrain[compare]'`). Each finished run also leaves `<run>.json`; running the
command again reuses the runs whose config is unchanged (`--fresh` retrains them all).

Usage: python benchmarks/compare.py [--steps 1000 | --epochs 1] [--out runs/compare] [--sweep 1024 4096]
       [--adaptive [--budget]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lmtrain.build import choose_softmax  # noqa: E402
from lmtrain.config.files import config_from_dict, load_config  # noqa: E402
from lmtrain.config.schema import Config  # noqa: E402
from lmtrain.data.prepare import prepare  # noqa: E402
from lmtrain.errors import ConfigError  # noqa: E402
from lmtrain.fit.loop import fit  # noqa: E402
from lmtrain.rundir import logged_scalars  # noqa: E402
from lmtrain.use.evaluate import evaluate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when imported by a test
from adaptive import train_adaptive  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
# Bumped when lmtrain's training changes in a way a config does not show, so that earlier
# figures are not reused for it. 2: negatives drawn without replacement (model.sampler_unique,
# whose default a record written before it would otherwise take). 3: the fused CPU LSTM
# (model.lstm_impl=auto), which changes every run's speed. 4: times are of training alone
# (validation left out), curves too.
RECORD_VERSION = 4
VOCABS = ("tiny=unigram:2000", "small=unigram:8000", "large=word:25000")
# The defaults before 2026-12-02, when `make compare`'s "recipe" became them: untied weights and
# a constant rate of 0.002 (`--plain` runs them).
PLAIN = ("model.tie_weights=false", "train.schedule=constant", "train.warmup_steps=0", "train.learning_rate=0.002")


# The fields of a Run that training measures (reused from an earlier record of the same config).
MEASURED = ("steps", "wall_seconds", "tokens_per_sec", "valid", "test", "curve")


@dataclass
class Run:
    name: str
    vocab: str
    softmax: str
    num_sampled: int | None
    overrides: list[str]
    reference: str = ""  # the full-softmax run a sampled run is measured against
    default: bool = False  # what model.softmax=auto trains at this vocabulary
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
    p.add_argument("--vocab", nargs="+", default=list(VOCABS), metavar="LABEL=KIND:SIZE",
                   help=f"Vocabularies to compare at (default: {' '.join(VOCABS)}); the last one gets the sweep.")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=None, help="Train this many whole epochs instead of --steps.")
    p.add_argument("--adaptive", action="store_true", help="Also train the adaptive softmax (benchmarks/adaptive.py) "
                   "at each vocabulary.")
    p.add_argument("--budget", action="store_true", help="With --adaptive: also the sampled run given the adaptive "
                   "run's training time.")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--sweep", type=int, nargs="*", default=[1024, 4096], help="Extra num_sampled values (last "
                                                                              "vocab; the default there is 2,048).")
    p.add_argument("--plain", action="store_true", help="Also run every pair with the pre-2026-12-02 defaults "
                   f"({' '.join(PLAIN)}).")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="Extra config override (repeatable).")
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument("--only", nargs="+", metavar="RUN", help="Train only these runs (e.g. large-full); the others "
                   "are reused when unchanged and otherwise left out of the table.")
    p.add_argument("--fresh", action="store_true", help="Train every run again, even if its config is unchanged "
                   "(after changing lmtrain's code, say).")
    args = p.parse_args()

    length = ([f"train.max_steps={args.steps}", "train.epochs=1000", f"train.checkpoint_every={args.steps}"]
              if args.epochs is None else ["train.max_steps=null", f"train.epochs={args.epochs}"])
    base = [*length, f"train.eval_every={args.eval_every}", *args.overrides]
    if args.adaptive:  # the adaptive reference scores zero-state windows: every run is scored alike
        base.append("train.eval_windows=true")
    if args.corpus:
        base.append(f"data.corpus={args.corpus}")
    runs = plan(args, load_config(args.config, base))
    unknown = sorted(set(args.only or []) - {r.name for r in runs})
    if unknown:
        p.error(f"--only: no run named {', '.join(unknown)} (runs: {', '.join(r.name for r in runs)})")
    args.out.mkdir(parents=True, exist_ok=True)
    done: list[Run] = []
    for run in runs:
        if run.softmax == "budget":  # the sampled run given the adaptive run's training time
            finished = {r.name: r for r in done}
            label = run.name.split("-")[0]
            sampled, adaptive = finished.get(f"{label}-sampled"), finished.get(f"{label}-adaptive")
            if sampled is None or adaptive is None:
                continue
            steps = round(adaptive.wall_seconds / sampled.wall_seconds * sampled.steps)
            run.softmax = "sampled"
            run.overrides += [f"train.max_steps={steps}", "train.epochs=1000", f"train.checkpoint_every={steps}"]
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


def plan(args: argparse.Namespace, config: Config) -> list[Run]:
    """The runs, in training order: per vocabulary a sampled and a full run (and their plain twins;
    only the full one where the negatives would not be fewer than the ids, a byte vocabulary say)."""
    runs: list[Run] = []
    for i, item in enumerate(args.vocab):
        label, _, spec = item.partition("=")
        kind, _, size = spec.partition(":")
        if not (label and "-" not in label and kind and size.isdigit()):
            raise SystemExit(f"--vocab: expected LABEL=KIND:SIZE (e.g. tiny=unigram:2000), got {item!r}")
        vocab = [f"tokenizer.model_type={kind}", f"tokenizer.vocab_size={size}",
                 f"data.dir={args.out / ('data-' + label)}"]
        auto, _ = choose_softmax(config.model, int(size))
        setups = [("", [])] + ([("-plain", list(PLAIN))] if args.plain else [])
        ids = int(size)
        negatives = config.model.negatives(ids)
        for suffix, extra in setups:
            full = f"{label}-full{suffix}"
            if negatives < ids:  # else there is nothing to sample from
                runs.append(Run(f"{label}-sampled{suffix}", spec, "sampled", negatives,
                                vocab + extra + ["model.softmax=sampled"], full,
                                default=not suffix and auto == "sampled"))
            runs.append(Run(full, spec, "full", None, vocab + extra + ["model.softmax=full"],
                            default=not suffix and auto == "full"))
        if getattr(args, "adaptive", False):
            runs.append(Run(f"{label}-adaptive", spec, "adaptive", None, vocab))
            if args.budget and negatives < ids:
                runs.append(Run(f"{label}-sampled-budget", spec, "budget", negatives,
                                vocab + ["model.softmax=sampled"], f"{label}-adaptive"))
        if i == len(args.vocab) - 1:
            for k in (k for k in args.sweep if k < ids):
                runs.append(Run(f"{label}-sampled-{k}", spec, "sampled", k,
                                vocab + ["model.softmax=sampled", f"model.num_sampled={k}"], f"{label}-full"))
    return runs


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
    for key in MEASURED:  # what the plan says about the run (its name, default, ...) stays the plan's
        value = record["run"][key]
        setattr(run, key, [tuple(p) for p in value] if key == "curve" else value)
    print(f"{run.name}: same config as {_record_path(cfg)}, reusing its figures", flush=True)
    return True


def train(run: Run, cfg: Config) -> None:
    prepare(cfg, progress=False, echo=lambda _: None)
    if run.softmax == "adaptive":
        result = train_adaptive(cfg, cfg.train.eval_every or 100, echo=lambda _: None)
        for key in ("steps", "wall_seconds", "tokens_per_sec", "valid", "test", "curve"):
            setattr(run, key, result[key])
    else:
        result = fit(cfg, force=True, progress=False, echo=lambda _: None)
        run.steps, run.wall_seconds = result.step, result.train_seconds
        run.tokens_per_sec = result.step * cfg.train.batch_size * cfg.train.seq_len / result.train_seconds
        run.valid = evaluate(cfg, "valid", progress=False, windows=cfg.train.eval_windows).perplexity
        run.test = evaluate(cfg, "test", progress=False, windows=cfg.train.eval_windows).perplexity
        run.curve = validation_curve(Path(cfg.train.run_dir) / "logs")
    record = {"version": RECORD_VERSION, "config": dataclasses.asdict(cfg), "run": dataclasses.asdict(run)}
    _record_path(cfg).write_text(json.dumps(record, indent=1, default=str))


def validation_curve(logs: Path) -> list[tuple[float, int, float]]:
    """(seconds spent training, step, validation perplexity) from the run's event files."""
    seconds = {step: value for _, step, value in logged_scalars(logs, "valid/train_seconds")}
    return [(seconds[step], step, ppl) for _, step, ppl in logged_scalars(logs, "valid/perplexity")]


def best_by(curve: list[tuple[float, int, float]], seconds: float) -> float:
    """Best validation perplexity a run had reached `seconds` after it started (inf if none yet)."""
    seen = [ppl for t, _, ppl in curve if t <= seconds]
    return min(seen) if seen else math.inf


def report(runs: list[Run], args: argparse.Namespace) -> None:
    by_name = {r.name: r for r in runs}
    pairs = [(r, by_name[r.reference]) for r in runs if r.reference in by_name]
    # Every sampled run that is not a budget run against its vocabulary's adaptive softmax, too.
    pairs += [(r, by_name[r.name.split("-")[0] + "-adaptive"]) for r in runs
              if r.softmax == "sampled" and not r.name.endswith("-budget")
              and r.name.split("-")[0] + "-adaptive" in by_name]
    length = f"{args.epochs} epoch(s)" if getattr(args, "epochs", None) else f"{args.steps} steps"
    lines = [
        f"{length} each; validation every {args.eval_every} steps; perplexities with the full softmax (the adaptive "
        "softmax's own exact ones). default: what model.softmax=auto trains at that vocabulary. Times and tokens/s "
        "are of training alone.",
        "",
        "Equal steps:",
        "",
        "| run | vocabulary | softmax | num_sampled | default | valid ppl | valid vs ref | test ppl | test vs ref "
        "| tokens/s | training time |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        ref = by_name.get(r.reference)
        valid_gap = f"{100 * (r.valid / ref.valid - 1):+.1f}%" if ref else ""
        test_gap = f"{100 * (r.test / ref.test - 1):+.1f}%" if ref else ""
        lines.append(f"| {r.name} | {r.vocab} | {r.softmax} | {r.num_sampled or '-'} | {'yes' if r.default else ''} "
                     f"| {r.valid:.2f} | {valid_gap} | {r.test:.2f} | {test_gap} | {r.tokens_per_sec:,.0f} "
                     f"| {r.wall_seconds:.0f} s |")
    lines += ["", "ref: the run's reference, the full softmax of its setup (for a budget run, the adaptive softmax)."]
    against = [(r, ref) for r, ref in pairs if ref.softmax == "adaptive"]
    if against:
        lines += ["", "Against the adaptive softmax (the same windows; tokens/s of training):", "",
                  "| run | adaptive | valid | test | valid vs adaptive | test vs adaptive | tokens/s vs adaptive |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r, ref in against:
            lines.append(f"| {r.name} | {ref.name} | {r.valid:.2f} / {ref.valid:.2f} | {r.test:.2f} / {ref.test:.2f} "
                         f"| {100 * (r.valid / ref.valid - 1):+.1f}% | {100 * (r.test / ref.test - 1):+.1f}% "
                         f"| {r.tokens_per_sec / ref.tokens_per_sec:.2f}x |")
    lines += ["", "Equal training time: each run's best validation perplexity when the quicker run of the pair "
              "had finished.", "",
              "| pair | at | run | reference | run vs reference |", "|---|---:|---:|---:|---:|"]
    for sampled, full in pairs:
        at = min(sampled.wall_seconds, full.wall_seconds)
        a, b = best_by(sampled.curve, at), best_by(full.curve, at)
        gap = f"{100 * (a / b - 1):+.1f}%" if math.isfinite(a) and math.isfinite(b) else "-"
        lines.append(f"| {sampled.name} / {full.name} | {at:.0f} s | {a:.2f} | {b:.2f} | {gap} |")
    plain = [(r, by_name[r.name + "-plain"]) for r in runs if r.name + "-plain" in by_name]
    if plain:
        lines += ["", f"Today's defaults against the plain setup ({' '.join(PLAIN)}), test perplexity:"]
        for r, old in plain:
            lines.append(f"- {r.name}: {r.test:.2f} vs {old.test:.2f} plain ({100 * (r.test / old.test - 1):+.1f}%)")
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
    labels = list(dict.fromkeys(r.name.split("-")[0] for r in runs))
    fig, axes = plt.subplots(1, len(labels), figsize=(6 * len(labels), 4.5), squeeze=False)
    for ax, label in zip(axes[0], labels):
        mine = [r for r in runs if r.name.split("-")[0] == label]
        for r in mine:
            if r.curve:
                ax.plot([p[0] for p in r.curve], [p[2] for p in r.curve], marker="o", markersize=3, label=r.name,
                        linestyle="--" if r.name.endswith("-plain") else "-")
        ax.set_title(f"{label} vocabulary ({mine[0].vocab})")
        ax.set_xlabel("seconds of training (validations left out)")
        ax.set_ylabel("validation perplexity (full softmax)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
