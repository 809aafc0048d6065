"""`lmtrain fit`: the training loop and what it decides step by step (logging, validation, the
plateau rate and early stopping, checkpoints, stop signals, the non-finite guard).

The loop is ours rather than `Model.fit` because it must own the data iterator: the checkpoint
holds the model, the optimizer slots and step, and the tf.data iterator position, so a run that
is stopped and started again continues where it was. The per-step work is `model.train_step`
(the Keras custom-step contract), compiled once with `tf.function`; under `train.distribute`
it is the same computation spread over replicas (`distribute.train_step`), and only the chief
writes the run directory. What the run directory and its checkpoints hold is `lmtrain.rundir`;
scoring the validation split is `lmtrain.scoring`.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf

from lmtrain.averaging import WeightAverage
from lmtrain.build import build_trainer, choose_softmax, step_counts
from lmtrain.checkpoints import CheckpointStore
from lmtrain.config import Config
from lmtrain.distribute import Distribution, create_distribution
from lmtrain.errors import Interrupted, LmtrainError
from lmtrain.flops import step_flops
from lmtrain.keras.optim import pending_applied
from lmtrain.keras.sampling import LOG_UNIFORM_MIN_CORRELATION, frequency_order_correlation
from lmtrain.loopstate import StateCarry, ValidationRecord
from lmtrain.meta import load_prepared
from lmtrain.paths import DataPaths, RunPaths
from lmtrain.precision import resolve_precision
from lmtrain.progress import progress_bar
from lmtrain.records import damaged_shard_error, split_files, stream_rows, train_dataset
from lmtrain.rundir import init_run_dir, restore, started_config, training_checkpoint
from lmtrain.runlength import (
    LIGHT_EXPOSURE,
    MIN_PASSES,
    REGULARISATION_KEYS,
    STRONG_EXPOSURE,
    for_run,
    run_exposure,
    short_run,
    short_run_steps,
)
from lmtrain.scoring import perplexity, split_nll
from lmtrain.signals import StopSignals

Echo = Callable[[str], None]


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    step: int
    train_loss: float | None  # sampled (or full) training loss over the last logging interval
    valid_perplexity: float | None  # full-softmax perplexity on the validation split
    tokens_per_sec: float | None
    data_wait_share: float | None  # share of step time spent waiting for the input pipeline
    wall_seconds: float
    skipped_batches: int = 0  # batches dropped for a non-finite loss (train.on_nan: skip)
    best_step: int | None = None  # step of the best validation perplexity so far
    best_perplexity: float | None = None
    stopped_early: bool = False  # train.patience ran out
    wrote_run_dir: bool = True  # False on the workers of a multi-worker run other than the chief
    softmax: str = "sampled"  # the training loss model.softmax stood for (auto: chosen by vocabulary)
    gflops_per_sec: float | None = None  # the step's matmul FLOPs (lmtrain.flops) over the step time
    train_seconds: float = 0.0  # of wall_seconds, those spent training (not validating, checkpointing, starting)


def fit(config: Config, force: bool = False, progress: bool = True, echo: Echo = print) -> FitResult:
    """Train (or continue training) the model a config describes; return the final figures.

    Resuming is exact: the checkpoint holds the weights, the dropout generators' states, the
    optimizer slots, the step, the tf.data iterator (shuffle buffer included) and the
    skipped-batch count, and the negative
    sampler is keyed by (seed, step); so a run stopped at any point and started again ends with
    the same weights as one never stopped (bit for bit on CPU, where the kernels are
    deterministic).
    """
    started = time.perf_counter()
    # First: the strategy must be set up before any other TensorFlow work in the process.
    distribution = create_distribution(config.train)
    data = DataPaths(Path(config.data.dir))
    meta = load_prepared(data)
    if meta.fingerprint != config.data_fingerprint():
        raise LmtrainError(
            f"data.dir: {data.root} was prepared from a different data/tokenizer config; run `lmtrain prepare` first"
        )
    splits = meta.splits
    train_files = split_files(data, "train", splits["train"].shard_bytes)
    valid_files = split_files(data, "valid", splits["valid"].shard_bytes) if meta.has_split("valid") else []
    run = RunPaths(Path(config.train.run_dir))
    chief = distribution.is_chief  # only the chief writes the run directory
    steps_per_epoch, total_steps = step_counts(config, meta)
    asked, first = config, None if force else started_config(run)
    # What the config leaves to the run's length; a resumed run keeps what it started with.
    config = for_run(config, total_steps, first, train_tokens=splits["train"].tokens, vocab_size=meta.vocab_size)
    if chief:
        init_run_dir(run, data, config, force, first)
    else:
        progress = False
    if distribution.kind != "none":
        echo(f"training with {distribution.describe()}; global batch {config.train.batch_size}")

    t = config.train
    loss_kind, why = choose_softmax(config.model, meta.vocab_size)
    if chief:
        echo(f"softmax: {loss_kind} ({why})")
    if config.model.sampler == "log_uniform" and loss_kind == "sampled":
        rho = frequency_order_correlation(meta.unigram_counts)
        if rho < LOG_UNIFORM_MIN_CORRELATION:
            echo(f"warning: model.sampler=log_uniform assumes ids sorted by frequency, but in {data.root} the "
                 f"rank correlation of id and frequency is only {rho:.2f}; model.sampler=unigram fits this tokenizer")
    if chief:
        if asked.model.tie_weights is None or asked.train.schedule is None:
            echo(f"run length: {_length_words(asked, config, total_steps, resumed=first is not None)}")
        echo(f"learning rate: {_rate_words(config)}")
        if any(getattr(asked.model, k) is None for k in REGULARISATION_KEYS):
            words = _regularisation_words(asked, config, total_steps, splits["train"].tokens, meta.vocab_size,
                                          resumed=first is not None)
            echo(f"regularisation: {words}")
        if t.precision == "auto":
            echo("precision: {} ({})".format(*resolve_precision(t.precision)))
    model, optimizer, train_fn = build_trainer(config, meta.vocab_size, meta.unigram_counts, total_steps,
                                               distribution)
    validation = ValidationRecord(t)
    average = None
    if t.average:
        with distribution.strategy.scope():
            average = WeightAverage(model.trainable_variables)
    best_store = CheckpointStore(run.checkpoints / "best", keep=1) if t.patience else None

    if t.stateful:
        rows = stream_rows(train_files, splits["train"].tokens, t.batch_size, t.seq_len, full_only=True)
        iterator = iter(rows.repeat(t.epochs).prefetch(tf.data.AUTOTUNE))
    else:
        iterator = iter(train_dataset(train_files, t.seq_len, t.batch_size, t.epochs, t.shuffle_buffer, t.seed))
    carry = StateCarry(model, t.batch_size, steps_per_epoch) if t.stateful else None
    # The loop's position: batches consumed. Not optimizer.iterations, which skipped batches
    # do not advance.
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    skipped_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = training_checkpoint(model, optimizer, data=iterator, step=step_var, skipped=skipped_var,
                                     validation=validation.checkpoint(),
                                     **({"train_state": carry.checkpoint()} if carry else {}),
                                     **({"average": average.checkpoint()} if average else {}))
    store = CheckpointStore(run.checkpoints, t.keep_checkpoints)
    latest = store.latest()
    if latest:
        restore(checkpoint, latest, model)
        if carry is not None:
            carry.restored()
        echo(f"resuming from {latest} (step {int(step_var)})")
    step, skipped = int(step_var), int(skipped_var)
    if distribution.workers > 1:
        _check_same_start(distribution, step, run)
    saved_at = step if latest else -1
    if validation.stopped:
        echo(f"training stopped early at step {step}: {validation.summary()}")
        total_steps = step  # nothing left to do

    def save(target: CheckpointStore = store) -> str | None:
        nonlocal saved_at
        if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.trainable_variables):
            # An update can overflow the weights with a finite loss (a huge learning rate):
            # checked here, once per checkpoint, so such weights are never saved. (On every
            # worker: they hold the same weights, so they stop together.)
            raise LmtrainError(_nan_message(step, store.latest(), what="weights"))
        if not chief:
            return None
        step_var.assign(step)
        skipped_var.assign(skipped)
        if carry is not None:
            carry.store()
        path = target.save(checkpoint, step)
        if target is store:
            saved_at = step
        return path

    writer = tf.summary.create_file_writer(str(run.logs)) if chief else tf.summary.create_noop_writer()
    bar = progress_bar(total=total_steps, initial=step, desc="fit", unit="step", disable=not progress)
    train_loss = valid_ppl = tokens_per_sec = wait_share = gflops = None
    # Matmul FLOPs per training token, forward and backward: what tokens/s is worth in GFLOP/s.
    flops_per_token = step_flops(model, 1)
    interval_tokens, interval_start, wait = 0.0, time.perf_counter(), 0.0
    loop_start_step = step
    # Seconds spent training in this invocation (validations and checkpoints left out): the
    # x axis of perplexity against time (benchmarks/compare.py).
    loop_started, not_training = time.perf_counter(), 0.0
    try:
        with StopSignals() as stop:
            while step < total_steps:
                # ---- input (timed: the pipeline must not starve the step)
                t0 = time.perf_counter()
                try:
                    batch = next(iterator)
                except tf.errors.OpError as exc:
                    raise damaged_shard_error(train_files, exc) from None
                except StopIteration:
                    # The data yields exactly the run's steps, so only a restored data position from
                    # another version of the input pipeline (the stateful one changed) ends it early.
                    raise LmtrainError(
                        f"the training data ran out at step {step} of {total_steps}: the checkpoint's data position "
                        f"does not fit this version's input pipeline; start the run again with --force, or "
                        f"evaluate the run as it is") from None
                wait += time.perf_counter() - t0
                # ---- forward / backward / update (skipped by the step itself if not finite)
                if carry is None:
                    logs = train_fn(batch)
                else:
                    logs = train_fn((*batch, carry.before(step)))
                    carry.after(logs["state"])
                step += 1
                interval_tokens += float(t.batch_size * t.seq_len)
                applied = bool(logs["applied"])
                if average is not None and applied:
                    average.update()
                if not applied:
                    if t.on_nan == "stop":
                        raise LmtrainError(_nan_message(step, store.latest()))
                    skipped += 1
                    bar.write(f"step {step}: non-finite loss, batch skipped ({skipped} so far)")
                # ---- logging
                if step % t.log_every == 0 or step == total_steps:
                    train_loss = float(logs["loss"])  # averaged over the interval
                    model.loss_tracker.reset_state()
                    elapsed = time.perf_counter() - interval_start
                    tokens_per_sec = interval_tokens / max(elapsed, 1e-9)
                    gflops = tokens_per_sec * flops_per_token / 1e9
                    wait_share = wait / max(elapsed, 1e-9)
                    with writer.as_default(step=step):
                        tf.summary.scalar(f"train/{loss_kind}_loss", train_loss)
                        tf.summary.scalar("train/tokens_per_sec", tokens_per_sec)
                        tf.summary.scalar("train/gflops_per_sec", gflops)
                        tf.summary.scalar("train/data_wait_share", wait_share)
                        tf.summary.scalar("train/learning_rate", _current_rate(optimizer))
                        tf.summary.scalar("train/skipped_batches", skipped)
                    postfix = {"loss": f"{train_loss:.3f}", "tok_s": f"{tokens_per_sec:,.0f}", "wait": f"{wait_share:.1%}"}
                    if skipped:
                        postfix["skipped"] = skipped
                    bar.set_postfix(postfix)
                    interval_tokens, interval_start, wait = 0.0, time.perf_counter(), 0.0
                bar.update(1)
                t_end = time.perf_counter()
                # ---- validation (full softmax): every eval_every steps or epoch, and at the end
                stop_early = False
                if valid_files and (step % (t.eval_every or steps_per_epoch) == 0 or step == total_steps):
                    averaged = average is not None and average.started
                    with pending_applied(optimizer, model.trainable_variables), _averaged(average):
                        score = split_nll(model, valid_files, t.seq_len, t.batch_size, splits["valid"].tokens,
                                          windows=t.eval_windows, progress=progress, max_tokens=t.eval_tokens,
                                          should_stop=lambda: stop.signum is not None, label="valid")
                    if stop.signum is not None:  # stopped within a batch: the step is kept, not this
                        bar.write(f"step {step}: validation stopped by {signal.Signals(stop.signum).name} after "
                                  f"{int(score.tokens)} tokens, not recorded")
                    else:
                        valid_ppl = perplexity(score.nll / score.tokens)
                        verdict = validation.record(step, valid_ppl)
                        with writer.as_default(step=step):
                            tf.summary.scalar("valid/perplexity", valid_ppl)
                            tf.summary.scalar("valid/train_seconds", t_end - loop_started - not_training)
                        line = (f"step {step}: valid perplexity {valid_ppl:.2f} (full softmax, {int(score.tokens)} "
                                f"tokens, {score.how}{', averaged weights' if averaged else ''})")
                        if verdict.improved and best_store is not None:
                            save(best_store)  # loading applies the pending LazyAdam steps, as evaluated
                            line += ", best so far"
                        if average is not None and not verdict.improved and not average.started:
                            average.start()  # the non-monotone trigger (see lmtrain.averaging)
                            line += "; averaging the weights from here"
                        if verdict.lower_rate:
                            rate = _current_rate(optimizer) * t.plateau_factor
                            optimizer.learning_rate.assign(rate)
                            line += f"; learning rate lowered to {rate:.3g}"
                        bar.write(line)
                        stop_early = verdict.stop
                # ---- checkpoint
                if step % t.checkpoint_every == 0 or step == total_steps or stop_early:
                    save()
                if stop_early:
                    bar.write(f"early stop at step {step}: {validation.summary()}")
                    break
                # ---- Ctrl-C / SIGTERM: the step is done; keep it and stop
                requested = stop.signum is not None
                if distribution.workers > 1:  # every step, on every worker: a collective
                    requested = distribution.any_worker(requested)
                if requested:
                    # Workers stop together, after the same step, whichever of them was signalled.
                    signum = stop.signum if stop.signum is not None else signal.SIGTERM
                    cause = (signal.Signals(signum).name if stop.signum is not None
                             else "a signal to another worker")
                    path = store.latest() if saved_at == step else save()
                    where = f"checkpoint {path}" if chief else f"the chief wrote the checkpoint to {run.checkpoints}"
                    raise Interrupted(f"stopped by {cause} after step {step}; {where}; run the same command to continue",
                                      signum)
                interval_start += time.perf_counter() - t_end  # validation and checkpoints are not throughput
                not_training += time.perf_counter() - t_end
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as exc:
        if distribution.workers < 2:
            raise
        # A worker died (or its network did): TensorFlow aborts the collectives of the others.
        kept = f"the last checkpoint is {store.latest()}" if store.latest() else "no checkpoint had been written yet"
        raise LmtrainError(f"lost contact with another worker after step {step} (TensorFlow: {type(exc).__name__}, "
                           f"see above); {kept}; start every worker again with the same command to continue") from None
    finally:
        bar.close()
        writer.close()
    if step == loop_start_step and not validation.stopped:
        echo(f"already trained to step {step} in {run.root}; raise train.max_steps or train.epochs to continue")
    return FitResult(run.root, step, train_loss, valid_ppl, tokens_per_sec, wait_share,
                     time.perf_counter() - started, skipped, validation.best_step, validation.best_perplexity,
                     validation.stopped, chief, loss_kind, gflops,
                     time.perf_counter() - loop_started - not_training)


def _averaged(average: WeightAverage | None) -> Any:
    """The averaged weights in place for a validation, where averaging has begun."""
    return average.applied() if average is not None else contextlib.nullcontext()


def _nan_message(step: int, latest: str | None, what: str = "loss") -> str:
    kept = f"the last checkpoint ({latest}) is kept as it was" if latest else "no checkpoint had been written yet"
    if what == "loss":
        return (
            f"non-finite training loss at step {step}: its update was not applied and {kept}; "
            f"lower train.learning_rate or train.clip_norm, or set train.on_nan=skip to drop such batches"
        )
    return (
        f"the weights are not finite at step {step} (an update overflowed float32); they were not saved and "
        f"{kept}; lower train.learning_rate"
    )


def _rate_words(config: Config) -> str:
    """How `fit` names the learning rate and where it came from."""
    t = config.train
    rate = t.rate(config.model.hidden_dim)
    source = ("train.learning_rate" if t.learning_rate is not None
              else f"train.learning_rate null: 0.01 x sqrt(512 / model.hidden_dim {config.model.hidden_dim})")
    shape = {"warmup_cosine": "peak of warmup_cosine", "warmup_stable_decay": "peak of warmup_stable_decay",
             "constant": "constant", "plateau": "plateau schedule from"}
    return f"{rate:g} ({shape[t.schedule]}; {source})"


def _length_words(asked: Config, config: Config, total_steps: int, resumed: bool) -> str:
    """How `fit` names the choices the run's length made (model.tie_weights and train.schedule
    null), and why."""
    open_keys = [key for key, value in (("model.tie_weights", asked.model.tie_weights),
                                        ("train.schedule", asked.train.schedule)) if value is None]
    made = [("tied" if config.model.tie_weights else "untied") if asked.model.tie_weights is None else None,
            f"schedule {config.train.schedule}" if asked.train.schedule is None else None]
    choices = f"{', '.join(w for w in made if w)} ({' and '.join(open_keys)} null"
    if resumed:
        return f"{total_steps:,} steps; {choices}: kept from the run's start)"
    hidden = config.model.hidden_dim
    kind = "short" if short_run(total_steps, hidden) else "not short"
    return (f"{total_steps:,} steps, {kind} (short: under {short_run_steps(hidden):,} at model.hidden_dim "
            f"{hidden}): {choices}; a resumed run keeps its first choice)")


def _regularisation_words(asked: Config, config: Config, total_steps: int, train_tokens: int, vocab_size: int,
                          resumed: bool) -> str:
    """How `fit` names the regularisation the null keys stand for, and why."""
    m = config.model
    made = (f"dropout {m.dropout:g} ({'locked' if m.locked_dropout else 'a mask per token'}), weight drop "
            f"{m.weight_drop:g}, word dropout {m.word_dropout:g}, AR {m.ar:g}, TAR {m.tar:g}")
    open_keys = [f"model.{k}" for k in REGULARISATION_KEYS if getattr(asked.model, k) is None]
    keys = open_keys[0] if len(open_keys) == 1 else f"{', '.join(open_keys[:-1])} and {open_keys[-1]}"
    if resumed:
        return f"{made} ({keys} null: kept from the run's start)"
    level, passes, params = run_exposure(config, total_steps, train_tokens, vocab_size)
    return (f"{made} ({keys} null: exposure {level:,.1f} = {passes:,.1f} passes x "
            f"{params / train_tokens:,.2f} parameters per training token; light under {MIN_PASSES:g} passes or "
            f"up to {LIGHT_EXPOSURE:g}, AWD-LSTM's from {STRONG_EXPOSURE:g})")


def _current_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate now (a mirrored variable under a strategy, so read as a tensor)."""
    return float(tf.convert_to_tensor(optimizer.learning_rate))


def _check_same_start(distribution: Distribution, step: int, run: RunPaths) -> None:
    """Every worker must start from the same checkpoint: each restores from `train.run_dir`,
    which therefore has to be one directory all of them see (shared storage)."""
    steps = distribution.gathered(step)
    if min(steps) != max(steps):
        raise LmtrainError(
            f"train.run_dir: the workers found different checkpoints in {run.root} (steps {min(steps)} to "
            f"{max(steps)}); with train.distribute=multi_worker it must be one directory every worker sees"
        )


