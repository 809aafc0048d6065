"""The `lmtrain` command line: prepare / fit / eval / generate. Wiring only.

Each command reads its options, loads the config, calls one library function and prints the
result. Errors the user can fix (`LmtrainError`) become one line on stderr and a non-zero exit;
TensorFlow is imported lazily so `--help` is instant.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer

from lmtrain.errors import BusyError, CheckpointWarning, ConfigError, InputError, Interrupted, LmtrainError

# Quiet TensorFlow's C++ start-up chatter (CPU feature notices etc.); errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    help="Train LSTM language models with sampled softmax; evaluate them with the full softmax.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")

ConfigArg = Annotated[
    Optional[Path],
    typer.Argument(help="YAML config; omitted: the built-in demo config (Shakespeare).", show_default=False),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key: section.key=value (YAML-typed, repeatable).",
                 show_default=False),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


class Split(str, Enum):
    valid = "valid"
    test = "test"


def _guard(fn: Callable[[], T], tensorflow: bool = True) -> T:
    """Run a command body; user errors become one line on stderr and a non-zero exit code.

    `tensorflow`: the command needs it; it is imported first, without its CPU-machine start-up
    notices (`lmtrain.keras.tfboot`). `prepare` needs no TensorFlow.
    """
    try:
        if tensorflow:
            from lmtrain.keras.tfboot import import_tensorflow

            import_tensorflow()
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return fn()
    except Interrupted as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(code=exc.exit_code) from None
    except (ConfigError, InputError, BusyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except LmtrainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(code=130) from None


def _load(config: Optional[Path], overrides: Optional[list[str]]):
    from lmtrain.config.files import load_config

    return load_config(config, overrides or ())


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    """lmtrain's own warnings (a checkpoint passed over) as one `warning:` line on stderr."""
    if issubclass(category, CheckpointWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _SHOW_WARNING(message, category, *args, **kwargs)  # type: ignore[arg-type]


_SHOW_WARNING = warnings.showwarning


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


def _notice_unused(cfg, overrides: Optional[list[str]], verb: str, honoured: set[str]) -> None:
    """Name each `--set` key the verb cannot honour because the trained run fixed it."""
    from lmtrain.config.files import unused_overrides
    from lmtrain.paths import RunPaths
    from lmtrain.rundir import started_config

    trained = started_config(RunPaths(Path(cfg.train.run_dir))) if overrides else None
    if trained is not None:
        for line in unused_overrides(overrides or (), cfg, trained, honoured, verb, cfg.train.run_dir):
            _echo_err(line)


# The config keys each verb reads from the config it is given; every other key comes from the
# trained run's own config.
_EVAL_KEYS = {"train.run_dir", "data.dir", "data.text_field", "train.eval_windows"}
_RUN_KEYS = {"train.run_dir"}


@app.command()
def prepare(
    config: ConfigArg = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild data.dir even if it holds other data.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the SentencePiece tokenizer and write sharded TFRecords of token ids."""

    def body() -> None:
        from lmtrain.data.prepare import prepare as run_prepare

        cfg = _load(config, set_)
        result = run_prepare(cfg, force=force, progress=not quiet, echo=_echo_err)
        if result.skipped:
            typer.echo(f"{result.paths.root} is already prepared from this config; nothing to do")
            return
        typer.echo(f"prepared {result.paths.root}: vocabulary {result.meta.vocab_size}")
        total = max(sum(s.tokens for s in result.meta.splits.values()), 1)
        for name, s in result.meta.splits.items():
            whole = s.documents - s.parts
            docs = ", ".join(text for text in (f"{whole} document(s)" if whole else "",
                                               f"{s.parts} part(s) cut from a file" if s.parts else "") if text)
            unk = f"  <unk> {s.unk_rate:.2%}" if s.unk_rate is not None else ""
            share = s.tokens / total
            typer.echo(f"  {name:5s} {s.tokens:12,d} tokens ({share:6.1%}) {s.bytes:14,d} bytes  {docs}{unk}")

    _guard(body, tensorflow=False)


@app.command()
def fit(
    config: ConfigArg = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Start the run over if train.run_dir holds another one.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the model (sampled softmax; full where the negatives would not be fewer than the
    vocabulary); continue from the last checkpoint.

    Ctrl-C or SIGTERM finishes the current step, writes a checkpoint and exits (130 / 143);
    running the same command again continues exactly where it stopped.
    """

    def body() -> None:
        from lmtrain.fit.loop import fit as run_fit

        cfg = _load(config, set_)
        r = run_fit(cfg, force=force, progress=not quiet, echo=_echo_err)
        parts = [f"step {r.step}"]
        if r.train_loss is not None:
            parts.append(f"train {r.softmax} loss {r.train_loss:.3f}")
        if r.valid_perplexity is not None:
            parts.append(f"valid perplexity {r.valid_perplexity:.2f}")
        if r.tokens_per_sec is not None:
            parts.append(f"{r.tokens_per_sec:,.0f} tokens/s"
                         + (f" ({r.gflops_per_sec:,.0f} GFLOP/s of matmuls)" if r.gflops_per_sec else ""))
        if r.data_wait_share is not None:
            parts.append(f"input wait {r.data_wait_share:.1%}")
        if r.skipped_batches:
            parts.append(f"{r.skipped_batches} batch(es) skipped for a non-finite loss")
        if r.stopped_early:
            parts.append(f"stopped early; best valid perplexity {r.best_perplexity:.2f} at step {r.best_step}")
        where = str(r.run_dir) if r.wrote_run_dir else f"(a worker; the chief writes {r.run_dir})"
        typer.echo(f"trained {where}: " + ", ".join(parts) + f" ({r.wall_seconds:.0f}s)")

    _guard(body)


@app.command(name="eval")
def eval_(
    config: ConfigArg = None,
    set_: SetOpt = None,
    split: Annotated[Split, typer.Option(help="Which prepared split to score.")] = Split.test,
    text: Annotated[Optional[str], typer.Option(
        "--text", help="Score this text file instead of a split ('-': standard input), read as one document.",
        show_default=False)] = None,
    per_line: Annotated[Optional[Path], typer.Option(
        "--per-line", help="Score each line of this text file (each record of a JSON Lines file, its "
        "data.text_field) on its own: one JSON object per line, in order, to standard output or --out. "
        ".gz/.bz2/.xz/.zst are read.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="With --per-line: write the JSON lines here instead of standard output (complete "
        "lines even after Ctrl-C).", show_default=False)] = None,
    id_field: Annotated[Optional[str], typer.Option(
        "--id-field", help="With --per-line on JSON Lines: copy this field of each record into its line as "
        "\"id\".", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a summary.")] = False,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", min=1, help="Streams (or windows) scored at once (default: the run's "
        "train.batch_size); memory bounded at any size. With --per-line: lines in batches of about this x "
        "train.seq_len tokens.", show_default=False)] = None,
    windows: Annotated[bool, typer.Option(
        "--windows", help="Score the split as windows of train.seq_len tokens, each from a zero state, "
        "instead of carrying the state through it (train.eval_windows).")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Exact perplexity with the full softmax, plus bits per byte and word perplexity; or, with
    --per-line, of every line of a file on its own.

    A split is read with the LSTM state carried through it, as published results are scored.

    The perplexity counts every token, <unk> included; the <unk> count comes beside it.
    """

    def body() -> None:
        if per_line is None and (out is not None or id_field is not None):
            raise ConfigError(f"{'--out' if out is not None else '--id-field'}: only with --per-line FILE")
        if per_line is not None and text is not None:
            raise ConfigError("--per-line: give either --text or --per-line, not both")
        if windows and (text is not None or per_line is not None):
            raise ConfigError("--windows: only when scoring a split (not with --text or --per-line)")
        cfg = _load(config, set_)
        _notice_unused(cfg, set_, "eval", _EVAL_KEYS)
        if per_line is not None:
            from lmtrain.use.load import load_run
            from lmtrain.use.perline import score_file

            run = load_run(Path(cfg.train.run_dir))
            r = score_file(run, per_line, out, batch_size or run.config.train.batch_size, cfg.data.text_field,
                           id_field, progress=not quiet)
            if out is not None:
                typer.echo(f"scored {r.texts:,} lines ({r.tokens:,} tokens) in {r.seconds:.1f}s "
                           f"({r.tokens / max(r.seconds, 1e-9):,.0f} tokens/s): {out}", err=True)
            return
        if text is not None:
            from lmtrain.use.api import load

            content = _read_text(text)
            r = load(cfg.train.run_dir).evaluate(content)
        else:
            from lmtrain.use.evaluate import evaluate

            r = evaluate(cfg, split.value, progress=not quiet and not as_json, batch_size=batch_size,
                         windows=windows or cfg.train.eval_windows)
        if as_json:
            typer.echo(json.dumps(r.to_dict()))
            return
        typer.echo(
            f"{r.split} @ step {r.step}: perplexity {r.perplexity:.2f} ({r.scoring}) | loss {r.loss:.4f} nats/token | "
            f"{r.bits_per_byte:.4f} bits/byte | word perplexity {r.word_perplexity:.2f} | {r.tokens:,} tokens"
            + (f" in {r.seconds:.1f}s ({r.tokens / r.seconds:,.0f} tokens/s)" if r.seconds > 0 else "")
        )
        typer.echo(f"  out of vocabulary (<unk>): {r.oov_tokens:,} tokens ({r.oov_rate:.2%})"
                   + (f"; perplexity without them {r.perplexity_without_oov:.2f}"
                      if r.oov_tokens and r.perplexity_without_oov is not None else ""))

    _guard(body)


@app.command()
def generate(
    config: ConfigArg = None,
    set_: SetOpt = None,
    prompt: Annotated[str, typer.Option(help="Text to continue (empty: start a new document).")] = "",
    max_tokens: Annotated[int, typer.Option(help="Stop after this many tokens.")] = 200,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k likeliest tokens (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sample among the likeliest tokens up to this mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same text.")] = 0,
    ignore_eos: Annotated[bool, typer.Option(help="Go on past the end of a document (always --max-tokens).")] = False,
    num_samples: Annotated[int, typer.Option(help="Continuations to sample, decoded together as one batch.")] = 1,
) -> None:
    """Sample text from a prompt with incremental (stateful) decoding."""

    def body() -> None:
        from dataclasses import asdict

        from lmtrain.use.api import load
        from lmtrain.use.generate import SamplingOptions

        options = SamplingOptions(max_tokens, temperature, top_k, top_p, seed, ignore_eos)  # checked first
        if num_samples < 1:
            raise LmtrainError(f"--num-samples: must be >= 1, got {num_samples}")
        cfg = _load(config, set_)
        _notice_unused(cfg, set_, "generate", _RUN_KEYS)
        samples = load(cfg.train.run_dir).generate(prompt, **asdict(options), num_samples=num_samples)
        if num_samples == 1:
            typer.echo(samples[0].text)
            return
        for i, g in enumerate(samples, 1):
            typer.echo(f"--- sample {i}/{num_samples} ---\n{g.text}")

    _guard(body)


@app.command()
def export(
    config: ConfigArg = None,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Directory to write (default: RUN_DIR/export, or RUN_DIR/litert with --format litert). "
             "An earlier export there is replaced; anything else there is an error.", show_default=False)] = None,
    format_: Annotated[str, typer.Option(
        "--format", metavar="savedmodel|litert",
        help="savedmodel: for TensorFlow and TF Serving. litert: a LiteRT (TFLite) file for a phone, "
             "one-token step with builtin ops only, checked through the interpreter.")] = "savedmodel",
    quantize: Annotated[Optional[str], typer.Option(
        metavar="none|float16|int8", show_default=False,
        help="litert only: how the weights are stored: none (float32), float16, or int8 (dynamic range, the "
             "default).")] = None,
    top_k: Annotated[int, typer.Option(
        "--top-k", min=0, help="litert only: the step also outputs the k most likely next ids (0: none).")] = 3,
    quiet: QuietOpt = False,
) -> None:
    """Write the trained model for serving: a SavedModel, or a LiteRT file for on-device use."""

    def body() -> None:
        from lmtrain.use.api import check_export_options, load

        cfg = _load(config, set_)
        _notice_unused(cfg, set_, "export", _RUN_KEYS)
        check_export_options(format_, quantize)
        if format_ == "savedmodel":
            if top_k != 3:
                raise InputError("--top-k applies to --format litert only")
            path = load(cfg.train.run_dir).export(out)
            typer.echo(f"exported {path}: signatures next_token, step, zero_state, score, metadata, "
                       f"tokenizer_path; load with tf.saved_model.load({str(path)!r})")
            return
        done = load(cfg.train.run_dir).export_litert(out, quantize or "int8", top_k, progress=not quiet)
        typer.echo(f"exported {done.path}: {done.quantize} model.tflite, {done.file_bytes / 1e6:.2f} MB "
                   f"({done.bytes_per_parameter:.2f} bytes per parameter, {done.parameters:,} parameters), "
                   f"signatures step and zero_state, builtin ops only; tokenizer.model and lmtrain.json beside it")
        if done.check is not None:
            c = done.check
            ppl = (f"perplexity {c.perplexity:.2f} through the interpreter, {c.model_perplexity:.2f} with the model "
                   f"({(c.perplexity / c.model_perplexity - 1) * 100:+.2f}%); " if c.perplexity is not None else "")
            typer.echo(f"checked on {c.source}, one token at a time: {ppl}"
                       f"largest log-probability difference {c.max_difference:.2g}")

    _guard(body)


def _read_text(source: str) -> str:
    """A text file (or '-' for standard input) as a string; undecodable bytes are replaced."""
    if source == "-":
        return sys.stdin.buffer.read().decode("utf-8", errors="replace")
    path = Path(source)
    if not path.is_file():
        raise LmtrainError(f"--text: {path} is not a file")
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise LmtrainError(f"--text: cannot read {path}: {exc}") from None


def main() -> None:  # pragma: no cover - console-script entry
    app(prog_name="lmtrain")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
