"""The defaults on a grid of model widths, run lengths and vocabularies, against a sweep around them.

`make compare` measures the defaults at the demo's shapes; this measures whether they hold away
from them. At each grid point (embedding/hidden width, steps, vocabulary) it trains, with
`lmtrain`'s own prepare / fit (the code the CLI runs, validation with the full softmax):
  - `default`: the config's values, untouched (what a user gets; with the choices the run's
    length makes, untied and constant below `short_run_steps`, as `fit` makes them);
  - the sweep around it: the learning rate x 0.5 and x 2, the other schedule (constant if the
    default is warm-up + cosine, else warm-up + cosine), and the other tying;
and reports each point's default against the best run of its sweep, with the unigram model of the
training split (add-one counts) as the floor no model should lose to. `--full` adds the
full-softmax reference (the default config with model.softmax=full) at the 1,000-step points of
the demo's width.

Finished runs leave `<run>.json` under `--out` and are reused while their config is unchanged,
so the grid can be run a point at a time (`--points`) and extended.

The data-size axis (`--data-size`, or its points by name) trains to convergence with early
stopping on a play, four tragedies in one file, the demo corpus and Penn Treebank, at two
widths, BPE 8k and word level, and sweeps the regularisation around the default instead:
dropout 0.1 / 0.3 / 0.5 x weight drop 0 / 0.3 / 0.5, with and without weight averaging.

Usage: python benchmarks/grid.py [--points NAME ...] [--data-size] [--out runs/grid] [--full]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from lmtrain.config.files import config_from_dict, load_config  # noqa: E402
from lmtrain.config.resolve import resolve  # noqa: E402
from lmtrain.config.rules import REGULARISATION_KEYS  # noqa: E402
from lmtrain.config.schema import Config  # noqa: E402
from lmtrain.data.meta import load_prepared  # noqa: E402
from lmtrain.data.prepare import prepare  # noqa: E402
from lmtrain.data.records import split_files  # noqa: E402
from lmtrain.errors import ConfigError  # noqa: E402
from lmtrain.fit.loop import fit  # noqa: E402
from lmtrain.paths import DataPaths  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
RECORD_VERSION = 1
VOCABS = {"u2k": "unigram:2000", "u8k": "unigram:8000", "w25k": "word:25000", "b8k": "bpe:8000", "b32k": "bpe:32000",
          "word": "word:null"}
# The data-size axis: a play (Hamlet, 32k words), four tragedies in one file (the README's own-text
# example, 600 KB), the demo corpus (all 38 plays) and Penn Treebank (its own splits; `make ptb`
# writes them to data/ptb-text).
PLAYS = {"play": ("hamlet",), "tragedies": ("hamlet", "king-lear", "macbeth", "othello")}
CORPORA = ("demo", "play", "tragedies", "ptb")


@dataclass(frozen=True)
class Point:
    name: str
    vocab: str  # a VOCABS key
    embedding_dim: int
    hidden_dim: int
    steps: int  # the run's steps (0: epochs of `corpus` with early stopping instead)
    corpus: str = "demo"  # a CORPORA key
    epochs: int = 0  # with steps 0: at most this many epochs, patience 2


# Widths 64/128, 256/512 (the demo's), 512/1024; 150 to 3000 steps (300, 600 and 800 place the
# switch from the short-run recipe, config.rules.short_run_steps); 2k, 8k and 25k words; BPE 8k and 32k,
# whose ids are not sorted by frequency. Three points at 16k ids or more away from the demo's width
# (s64-1000-w25k, l512-600-w25k, m256-1000-b32k) are where the default number of negatives grows.
POINTS = (
    Point("s64-150", "u8k", 64, 128, 150),
    Point("s64-300", "u8k", 64, 128, 300),
    Point("s64-600", "u8k", 64, 128, 600),
    Point("s64-800", "u8k", 64, 128, 800),
    Point("s64-1000", "u8k", 64, 128, 1000),
    Point("s64-3000", "u8k", 64, 128, 3000),
    Point("m256-150", "u8k", 256, 512, 150),
    Point("m256-300", "u8k", 256, 512, 300),
    Point("m256-600", "u8k", 256, 512, 600),
    Point("m256-800", "u8k", 256, 512, 800),
    Point("m256-1000", "u8k", 256, 512, 1000),
    Point("m256-150-u2k", "u2k", 256, 512, 150),
    Point("m256-1000-u2k", "u2k", 256, 512, 1000),
    Point("m256-150-w25k", "w25k", 256, 512, 150),
    Point("m256-1000-w25k", "w25k", 256, 512, 1000),
    Point("m256-150-b8k", "b8k", 256, 512, 150),
    Point("m256-1000-b8k", "b8k", 256, 512, 1000),
    Point("s64-1000-w25k", "w25k", 64, 128, 1000),
    Point("l512-600-w25k", "w25k", 512, 1024, 600),
    Point("m256-1000-b32k", "b32k", 256, 512, 1000),
    Point("l512-150", "u8k", 512, 1024, 150),
    Point("l512-300", "u8k", 512, 1024, 300),
    Point("l512-600", "u8k", 512, 1024, 600),
    Point("l512-1000", "u8k", 512, 1024, 1000),
)
# Trained to convergence (early stopping, patience 2) on corpora of four sizes, at the demo's
# width and the larger one, subword 8k (BPE, as the README's own-text example) and word level.
DATA_POINTS = tuple(
    Point(f"{corpus}-{width}-{vocab}", vocab, width, 2 * width, 0, corpus, epochs)
    for corpus, epochs, vocabs in (("play", 30, ("b8k", "word")), ("tragedies", 20, ("b8k", "word")),
                                   ("demo", 10, ("b8k", "word")), ("ptb", 20, ("word",)))
    for width in (256, 512) for vocab in vocabs)
ALL_POINTS = POINTS + DATA_POINTS


@dataclass
class Run:
    point: str
    variant: str
    overrides: list[str]
    valid: float = math.nan
    tokens_per_sec: float = 0.0
    wall_seconds: float = 0.0


def corpus_sources(args: argparse.Namespace, name: str) -> list[str]:
    """`--set` overrides that point data.corpus at a data-size point's corpus (written under --out
    from the built-in plays, as a user's own one-file text)."""
    if name == "demo":
        return []
    if name == "ptb":
        from ptb import (
            write_text,  # benchmarks/ptb.py: the files from the `treebank` package (the ptb extra)
        )

        text = Path("data/ptb-text")
        write_text(text)
        return ["data.corpus={" + ", ".join(f"{s}: {text / f'ptb.{s}.txt'}" for s in ("train", "valid", "test")) + "}"]
    path = args.out / f"{name}.txt"
    if not path.is_file():
        from lmtrain.data.corpus import list_documents

        docs = {Path(d.name).stem: d for d in list_documents(["shakespeare"])}
        path.write_text("".join(line + "\n" for play in PLAYS[name] for line in docs[play].lines()))
    return [f"data.corpus={path}"]


def _data_name(point: Point) -> str:
    """The name of a point's data directory: its vocabulary, and its corpus unless the demo's."""
    return point.vocab if point.corpus == "demo" else f"{point.corpus}-{point.vocab}"


def point_config(args: argparse.Namespace, point: Point, extra: list[str]) -> Config:
    kind, _, size = VOCABS[point.vocab].partition(":")
    base = [f"tokenizer.model_type={kind}", f"tokenizer.vocab_size={size}",
            f"data.dir={args.out / ('data-' + _data_name(point))}",
            f"model.embedding_dim={point.embedding_dim}", f"model.hidden_dim={point.hidden_dim}",
            "train.eval_every=null", *corpus_sources(args, point.corpus)]
    if point.steps:
        base += [f"train.max_steps={point.steps}", "train.epochs=1000", f"train.checkpoint_every={point.steps}"]
    else:
        base += [f"train.epochs={point.epochs}", "train.max_steps=null", "train.patience=2",
                 "train.checkpoint_every=100000"]
    asked = load_config(args.config, base + args.overrides + extra)
    # With the choices the run's length makes (tying, schedule) made, as `fit` makes them, so a
    # record's config says what was trained and the sweep goes around what users get; the
    # regularisation `fit` chooses from the data (the run directory's config.yaml says which).
    if not point.steps:  # the run's length is up to early stopping: every choice is left to fit
        return asked
    made = resolve(asked, point.steps)
    return dataclasses.replace(made, model=dataclasses.replace(
        made.model, **{k: getattr(asked.model, k) for k in REGULARISATION_KEYS}))


def sweep(cfg: Config, point: Point) -> dict[str, list[str]]:
    """The default and the runs around it, as --set overrides of the default config. At the
    data-size points: dropout 0.1 / 0.3 / 0.5 x weight drop 0 / 0.3 / 0.5, with and without
    weight averaging (the other regularisers as the rule sets them)."""
    if not point.steps:
        runs: dict[str, list[str]] = {"default": []}
        for dropout in (0.1, 0.3, 0.5):
            for weight_drop in (0.0, 0.3, 0.5):
                for average in (False, True):
                    name = f"dropout {dropout:g} wd {weight_drop:g}{' avg' if average else ''}"
                    runs[name] = [f"model.dropout={dropout}", f"model.weight_drop={weight_drop}",
                                  f"train.average={str(average).lower()}"]
        return runs
    t, m = cfg.train, cfg.model
    rate = t.rate(m.hidden_dim)
    other_schedule = "constant" if t.schedule == "warmup_cosine" else "warmup_cosine"
    return {
        "default": [],
        "rate x0.5": [f"train.learning_rate={rate / 2:g}"],
        "rate x2": [f"train.learning_rate={rate * 2:g}"],
        other_schedule: [f"train.schedule={other_schedule}"],
        "untied" if m.tie_weights else "tied": [f"model.tie_weights={str(not m.tie_weights).lower()}"],
    }


# The full-softmax reference: the default config with model.softmax=full. Its optimizer needs no
# variant: every gradient of a full-softmax step is dense, and LazyAdam's dense update is Keras'
# Adam (the two gave the same perplexity to the last digit at s64-1000).
FULL = {"full": ["model.softmax=full"]}
# The variant names `sweep` gives (what "best of sweep" is taken over).
SWEEP_NAMES = ("default", "rate x0.5", "rate x2", "constant", "warmup_cosine", "untied", "tied",
               *(f"dropout {d:g} wd {w:g}{a}" for d in (0.1, 0.3, 0.5) for w in (0.0, 0.3, 0.5) for a in ("", " avg")))


def record_path(args: argparse.Namespace, point: Point, variant: str) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in variant).strip("-")
    return args.out / f"{point.name}--{slug}.json"


def _same_runs(cfg: Config) -> Config:
    """A config with its run directory left out: two runs of equal such configs train alike."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_dir=""))


def finished_runs(out: Path) -> list[tuple[Config, dict]]:
    """The finished runs under `out`, each with its config read back (run directory left out)."""
    found = []
    for path in sorted(out.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            if record["version"] == RECORD_VERSION:
                found.append((_same_runs(config_from_dict(record["config"])), record))
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            continue
    return found


def earlier_record(args: argparse.Namespace, cfg: Config) -> dict | None:
    """A finished run of the same config under --out, whatever variant name it had."""
    want = _same_runs(cfg)
    return next((record for config, record in args.finished if config == want), None)


def run_one(args: argparse.Namespace, point: Point, variant: str, overrides: list[str]) -> Run | None:
    path = record_path(args, point, variant)
    cfg = point_config(args, point, overrides + [f"train.run_dir={path.with_suffix('')}"])
    run = Run(point.name, variant, overrides)
    record = None if args.fresh else earlier_record(args, cfg)
    if record is None and args.report:
        return None
    if record is not None:
        run.valid, run.tokens_per_sec, run.wall_seconds = (record["run"][k] for k in
                                                           ("valid", "tokens_per_sec", "wall_seconds"))
        return run
    prepare(cfg, progress=False, echo=lambda _: None)
    started = time.perf_counter()
    result = fit(cfg, force=True, progress=False, echo=lambda _: None)
    # An early-stopped run keeps its best checkpoint (what eval uses): its figure is the best one.
    run.valid = float(result.best_perplexity if cfg.train.patience else result.valid_perplexity)
    run.tokens_per_sec = float(result.tokens_per_sec or 0.0)
    run.wall_seconds = time.perf_counter() - started
    record = {"version": RECORD_VERSION, "config": dataclasses.asdict(cfg), "run": dataclasses.asdict(run)}
    path.write_text(json.dumps(record, indent=1, default=str))
    args.finished.append((_same_runs(cfg), record))
    return run


def unigram_perplexity(cfg: Config) -> float:
    """Validation perplexity of the training split's add-one unigram model."""
    data = DataPaths(Path(cfg.data.dir))
    meta = load_prepared(data)
    counts = np.asarray(meta.unigram_counts, np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    import tensorflow as tf

    files = split_files(data, "valid", meta.splits["valid"].shard_bytes)
    records = tf.data.TFRecordDataset([str(f) for f in files]).map(lambda r: tf.io.decode_raw(r, tf.int32))
    ids = np.concatenate(list(records.as_numpy_iterator()))
    return float(np.exp(-log_p[ids].mean()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=DEMO)
    p.add_argument("--points", nargs="+", default=[q.name for q in POINTS], metavar="POINT",
                   help=f"Grid points to run (default: the demo corpus's: {' '.join(q.name for q in POINTS)}; "
                        f"the data-size axis, trained to convergence: {' '.join(q.name for q in DATA_POINTS)}).")
    p.add_argument("--data-size", action="store_true",
                   help="Run the data-size axis's points (instead of the demo corpus's, unless --points names them).")
    p.add_argument("--variants", nargs="+", metavar="VARIANT", help="Only these variants of the sweep.")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=KEY=VALUE,KEY=VALUE",
                   help="An extra run at every point, e.g. 'rate 0.01=train.learning_rate=0.01' (repeatable).")
    p.add_argument("--full", action="store_true", help="Add the full-softmax references at the demo's width.")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="Override for every run.")
    p.add_argument("--out", type=Path, default=Path("runs/grid"))
    p.add_argument("--fresh", action="store_true", help="Retrain even runs whose config is unchanged.")
    p.add_argument("--report", action="store_true", help="Train nothing: the table of the runs already finished.")
    args = p.parse_args()
    by_name = {q.name: q for q in ALL_POINTS}
    if args.data_size:
        named = args.points != [q.name for q in POINTS]
        args.points = list(dict.fromkeys((args.points if named else []) + [q.name for q in DATA_POINTS]))
    unknown = [n for n in args.points if n not in by_name]
    if unknown:
        p.error(f"--points: unknown {', '.join(unknown)} (points: {', '.join(by_name)})")
    args.out.mkdir(parents=True, exist_ok=True)
    args.finished = finished_runs(args.out)
    results: list[tuple[Point, float, list[Run], int]] = []
    for point in (by_name[n] for n in args.points):
        plan = sweep(point_config(args, point, []), point)
        planned = len(plan)
        if args.variants:
            plan = {k: v for k, v in plan.items() if k in args.variants}
        for item in args.extra:
            name, _, sets = item.partition("=")
            plan[name] = sets.split(",")
        if args.full and point.embedding_dim == 256 and point.steps >= 1000:
            plan.update(FULL)
        runs = []
        for variant, overrides in plan.items():
            run = run_one(args, point, variant, overrides)
            if run is None:
                continue
            print(f"{point.name} {variant}: valid {run.valid:.2f}  {run.tokens_per_sec:,.0f} tok/s "
                  f"{run.wall_seconds:.0f} s", flush=True)
            runs.append(run)
        if runs:
            results.append((point, unigram_perplexity(point_config(args, point, [])), runs, planned))
    report(args, results)


def report(args: argparse.Namespace, results: list[tuple[Point, float, list[Run], int]]) -> None:
    lines = ["Validation perplexity (full softmax) at equal steps, or the best of a run to convergence with early "
             "stopping; `default` is the config as users get it; the sweep: rate x0.5 and x2, the other schedule, "
             "the other tying, or at the data-size points dropout x weight drop x averaging.", "",
             "| point | vocabulary | E/H | steps | unigram | default | best of sweep | default vs best "
             "| full softmax | default vs full | runs |",
             "|---|---|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for point, unigram, runs, planned in results:
        default = next((r for r in runs if r.variant == "default"), None)
        full = next((r for r in runs if r.variant == "full"), None)
        swept = [r for r in runs if r.variant in SWEEP_NAMES]
        best = min(swept or runs, key=lambda r: r.valid)
        gap = f"{100 * (default.valid / best.valid - 1):+.1f}%" if default else "-"
        if len(swept) < planned:
            gap += f" ({len(swept)} of {planned} runs)"
        full_gap = f"{100 * (default.valid / full.valid - 1):+.1f}%" if default and full else "-"
        cells = "; ".join(f"{r.variant} {r.valid:.1f}" for r in runs)
        lines.append(f"| {point.name} | {VOCABS[point.vocab]} | {point.embedding_dim}/{point.hidden_dim} "
                     f"| {point.steps or 'early stop'} | {unigram:.1f} | {f'{default.valid:.2f}' if default else '-'} "
                     f"| {best.variant} {best.valid:.2f} | {gap} | {f'{full.valid:.2f}' if full else '-'} "
                     f"| {full_gap} | {cells} |")
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)
    plot(results, args.out / "results.png")


def plot(results: list[tuple[Point, float, list[Run], int]], path: Path) -> None:
    """Each point's runs as bars, relative to the default (below 1: better than the default)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'lmtrain[compare]'): no plot written")
        return
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 1.0 * len(results))), 4.5))
    variants = list(dict.fromkeys(r.variant for _, _, runs, _ in results for r in runs))
    width = 0.8 / max(len(variants), 1)
    for i, variant in enumerate(variants):
        xs, ys = [], []
        for j, (_, _, runs, _) in enumerate(results):
            default = next((r for r in runs if r.variant == "default"), None)
            run = next((r for r in runs if r.variant == variant), None)
            if default and run:
                xs.append(j + (i - len(variants) / 2) * width)
                ys.append(run.valid / default.valid)
        ax.bar(xs, ys, width=width, label=variant)
    ax.set_ylim(0.8, None)  # the differences are a few percent to tens of percent
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(0.97, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(results)), [p.name for p, _, _, _ in results], rotation=20)
    ax.set_ylabel("validation perplexity / the default's")
    ax.set_title("The defaults against a sweep around them (below the dashed line: >3% better)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
