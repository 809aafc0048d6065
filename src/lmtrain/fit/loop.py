"""`lmtrain fit`: the training loop and what it decides step by step (logging, validation, the
plateau rate and early stopping, checkpoints, stop signals, the non-finite guard).

The loop is ours rather than `Model.fit` because it must own the data iterator: the checkpoint
holds the model, the optimizer slots and step, and the tf.data iterator position, so a run that
is stopped and started again continues where it was. The per-step work is the training step
(`lmtrain.fit.step.TrainStep`), compiled once with `tf.function`; under `train.distribute`
it is the same computation spread over replicas (`distribute.train_step`), and only the chief
writes the run directory. What the run directory and its checkpoints hold is `lmtrain.rundir`;
scoring the validation split is `lmtrain.scoring`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf

from lmtrain.build import SGD, step_counts
from lmtrain.bundle import damage
from lmtrain.checkpoints import CheckpointStore, step_of
from lmtrain.config.explain import describe
from lmtrain.config.precision import choose_precision
from lmtrain.config.resolve import choose_softmax, resolve
from lmtrain.config.schema import Config
from lmtrain.data.meta import DataMeta, load_prepared
from lmtrain.data.records import damaged_shard_error, split_files, stream_rows, train_dataset
from lmtrain.errors import Interrupted, LmtrainError
from lmtrain.fit.averaging import WeightAverage
from lmtrain.fit.distribute import Distribution, create_distribution
from lmtrain.fit.flops import step_flops
from lmtrain.fit.loopstate import StateCarry, ValidationRecord
from lmtrain.fit.step import TrainStep
from lmtrain.fit.trainer import build_trainer
from lmtrain.keras.optim import pending_applied
from lmtrain.keras.sampling import sampler_warning, unigram_log_prior
from lmtrain.lock import run_dir_lock
from lmtrain.model import LanguageModel
from lmtrain.paths import DataPaths, RunPaths
from lmtrain.progress import progress_bar
from lmtrain.rundir import init_run_dir, restore, started_config, training_checkpoint
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
    gflops_per_sec: float | None = None  # the step's matmul FLOPs (lmtrain.fit.flops) over the step time
    train_seconds: float = 0.0  # of wall_seconds, those spent training (not validating, checkpointing, starting)


def fit(config: Config, force: bool = False, progress: bool = True, echo: Echo = print) -> FitResult:
    """Train (or continue training) the model a config describes; return the final figures.

    Resuming is exact: the checkpoint holds the weights, the dropout generators' states, the
    optimizer slots, the step, the tf.data iterator (shuffle buffer included) and the
    skipped-batch count, and the negative sampler is keyed by (seed, step); so a run stopped at
    any point and started again ends with the same weights as one never stopped (bit for bit on
    CPU, where the kernels are deterministic).
    """
    started = time.perf_counter()
    with contextlib.ExitStack() as held:  # the run directory's lock, from set-up to the end
        run = _set_up(config, force, progress, echo, held)
        loop = _Loop(run, echo)
        first_step = loop.step
        try:
            with StopSignals() as stop:
                while loop.step < run.total_steps:
                    if loop.one_step(stop):
                        break
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as exc:
            if run.distribution.workers < 2:
                raise
            # A worker died (or its network did): TensorFlow aborts the collectives of the others.
            latest = loop.store.latest()
            kept = f"the last checkpoint is {latest}" if latest else "no checkpoint had been written yet"
            raise LmtrainError(f"lost contact with another worker after step {loop.step} (TensorFlow: "
                               f"{type(exc).__name__}, see above); {kept}; start every worker again with the "
                               f"same command to continue") from None
        finally:
            loop.close()
    if loop.step == first_step and not run.validation.stopped:
        echo(f"already trained to step {loop.step} in {run.paths.root}; raise train.max_steps or train.epochs to "
             f"continue")
    return loop.result(time.perf_counter() - started)


@dataclass
class _Setup:
    """What `_set_up` builds for the loop: the resolved config, the data, the model and its step."""

    config: Config
    paths: RunPaths
    distribution: Distribution
    meta: DataMeta
    train_files: list[Path]
    valid_files: list[Path]
    steps_per_epoch: int
    total_steps: int
    loss_kind: str
    model: LanguageModel
    optimizer: keras.optimizers.Optimizer
    step: TrainStep
    train_fn: Callable[..., Any]
    validation: ValidationRecord
    average: WeightAverage | None
    progress: bool


def _set_up(config: Config, force: bool, progress: bool, echo: Echo, held: contextlib.ExitStack) -> _Setup:
    """Check the data, take the run directory's lock (the chief: it alone writes there; `held`
    keeps it until the run ends), resolve the config once (`lmtrain.config.resolve`), start or
    reopen the run directory, say what the run chose, and build the model and its compiled step."""
    # First: the strategy must be set up before any other TensorFlow work in the process.
    distribution = create_distribution(config.train)
    if distribution.is_chief:
        held.enter_context(run_dir_lock(Path(config.train.run_dir), echo))
    data = DataPaths(Path(config.data.dir))
    meta = load_prepared(data)
    if meta.fingerprint != config.data_fingerprint():
        raise LmtrainError(
            f"data.dir: {data.root} was prepared from a different data/tokenizer config; run `lmtrain prepare` first"
        )
    splits = meta.splits
    paths = RunPaths(Path(config.train.run_dir))
    steps_per_epoch, total_steps = step_counts(config, meta)
    asked, first = config, None if force else started_config(paths)
    counts = {"train_tokens": splits["train"].tokens, "vocab_size": meta.vocab_size}
    if first is not None:  # a run directory saved before a key was resolved: what that version made of it
        first = resolve(first, total_steps, first, **counts)
    # What the config leaves to the run; a resumed run keeps what it started with.
    config = resolve(config, total_steps, first, **counts)
    if distribution.is_chief:  # only the chief writes the run directory
        init_run_dir(paths, data, config, force, first)
    else:
        progress = False
    if distribution.kind != "none":
        echo(f"training with {distribution.describe()}; global batch {config.train.batch_size}")
    # Said as asked: "auto" and a null num_sampled name the rule that made the choice.
    said = dataclasses.replace(config.model, softmax=asked.model.softmax, num_sampled=asked.model.num_sampled)
    loss_kind, why = choose_softmax(said, meta.vocab_size)
    if distribution.is_chief:
        echo(f"softmax: {loss_kind} ({why})")
    warn = sampler_warning(config.model.sampler if loss_kind == "sampled" else None, meta.unigram_counts)
    if warn:
        echo(f"warning: model.sampler={config.model.sampler}: {warn} in {data.root}; model.sampler=unigram fits "
             f"this tokenizer")
    if distribution.is_chief:
        for line in describe(asked, config, total_steps, splits["train"].tokens, meta.vocab_size, first is not None):
            echo(line)
        if asked.train.precision == "auto":
            echo("precision: {} ({})".format(*choose_precision(asked.train.precision)))
    trainer = build_trainer(config, meta.vocab_size, meta.unigram_counts, total_steps, distribution)
    average = None
    if config.train.average:
        with distribution.strategy.scope():
            average = WeightAverage(trainer.model.trainable_variables)
    return _Setup(config, paths, distribution, meta, split_files(data, "train", splits["train"].shard_bytes),
                  split_files(data, "valid", splits["valid"].shard_bytes) if meta.has_split("valid") else [],
                  steps_per_epoch, total_steps, loss_kind, trainer.model, trainer.optimizer, trainer.step,
                  trainer.train_fn, ValidationRecord(config.train), average, progress)


class _Loop:
    """The training loop's state between steps: the input, the checkpoints, the interval's
    figures and the latest validation. `one_step` is one pass of the loop."""

    def __init__(self, run: _Setup, echo: Echo) -> None:
        self.run, t = run, run.config.train
        model, tokens = run.model, run.meta.splits["train"].tokens
        if t.stateful:
            rows = stream_rows(run.train_files, tokens, t.batch_size, t.seq_len, full_only=True)
            self.iterator = iter(rows.repeat(t.epochs).prefetch(tf.data.AUTOTUNE))
        else:
            self.iterator = iter(train_dataset(run.train_files, t.seq_len, t.batch_size, t.epochs, t.shuffle_buffer,
                                               t.seed))
        self.carry = StateCarry(model, t.batch_size, run.steps_per_epoch) if t.stateful else None
        # The loop's position: batches consumed. Not optimizer.iterations, which skipped
        # batches do not advance.
        self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.skipped_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        extra = {**({"train_state": self.carry.checkpoint()} if self.carry else {}),
                 **({"average": run.average.checkpoint()} if run.average else {})}
        self.checkpoint = training_checkpoint(model, run.optimizer, data=self.iterator, step=self.step_var,
                                              skipped=self.skipped_var, validation=run.validation.checkpoint(), **extra)
        self.store = CheckpointStore(run.paths.checkpoints, t.keep_checkpoints)
        self.best_store = CheckpointStore(run.paths.best_checkpoints, keep=1) if t.patience else None
        latest = self._undamaged_latest(echo) if run.distribution.is_chief else self.store.latest()
        if latest:
            restore(self.checkpoint, latest, model)
            if self.carry is not None:
                self.carry.restored()
            echo(f"resuming from {latest} (step {int(self.step_var)})")
        self.step, self.skipped = int(self.step_var), int(self.skipped_var)
        if run.distribution.workers > 1:
            _check_same_start(run.distribution, self.step, run.paths)
        self.saved_at = self.step if latest else -1
        if run.validation.stopped:
            echo(f"training stopped early at step {self.step}: {run.validation.summary()}")
            run.total_steps = self.step  # nothing left to do
        chief = run.distribution.is_chief
        self.writer = tf.summary.create_file_writer(str(run.paths.logs)) if chief else tf.summary.create_noop_writer()
        self.bar = progress_bar(total=run.total_steps, initial=self.step, desc="fit", unit="step",
                                disable=not run.progress)
        self.figures = _Interval(step_flops(run.step, 1))
        self.valid_ppl: float | None = None
        # The training unigram's log-probabilities: validation scores the unigram model beside
        # the model, and a model no better than it after an epoch is said to be stuck.
        self.prior = unigram_log_prior(run.meta.unigram_counts)
        self.warned_stuck = False
        # Seconds spent training in this invocation (validations and checkpoints left out): the
        # x axis of perplexity against time (benchmarks/compare.py).
        self.loop_started, self.not_training = time.perf_counter(), 0.0

    def _undamaged_latest(self, echo: Echo) -> str | None:
        """The newest checkpoint whose files are intact (`lmtrain.bundle.damage`); a damaged one
        is set aside (renamed, never deleted) with one line saying which and what follows. A
        checkpoint of another config keeps its error (`rundir.restore`): that is not damage."""
        latest = self.store.latest()
        while latest and (why := damage(latest)):
            damaged, aside = latest, self.store.set_aside(latest)
            latest = self.store.latest()
            then = f"resuming from step {step_of(latest)}" if latest else "no checkpoint before it: starting afresh"
            echo(f"warning: checkpoint {damaged} is damaged ({why}); set aside as {aside}; {then}")
        return latest

    def one_step(self, stop: StopSignals) -> bool:
        """Train on one batch, then log, validate, checkpoint and heed a stop signal as due;
        True where the run stops early."""
        run, t = self.run, self.run.config.train
        batch = self._next_batch()
        # forward / backward / update (skipped by the step itself if not finite)
        logs = run.train_fn(batch if self.carry is None else (*batch, self.carry.before(self.step)))
        if self.carry is not None:
            self.carry.after(logs["state"])
        self.step += 1
        self.figures.tokens += float(t.batch_size * t.seq_len)
        applied = bool(logs["applied"])
        if run.average is not None and applied:
            run.average.update()
        if not applied:
            if t.on_nan == "stop":
                raise LmtrainError(_nan_message(self.step, self.store.latest()))
            self.skipped += 1
            self.bar.write(f"step {self.step}: non-finite loss, batch skipped ({self.skipped} so far)")
        if self.step % t.log_every == 0 or self.step == run.total_steps:
            self._log(float(logs["loss"]))
        self.bar.update(1)
        t_end = time.perf_counter()
        stop_early = False
        if run.valid_files and (self.step % (t.eval_every or run.steps_per_epoch) == 0
                                or self.step == run.total_steps):
            stop_early = self._validate(stop, t_end)
        if self.step % t.checkpoint_every == 0 or self.step == run.total_steps or stop_early:
            self.save()
        if stop_early:
            self.bar.write(f"early stop at step {self.step}: {run.validation.summary()}")
            return True
        self._heed(stop)
        self.figures.start += time.perf_counter() - t_end  # validation and checkpoints are not throughput
        self.not_training += time.perf_counter() - t_end
        return False

    def _next_batch(self) -> Any:
        """The next batch, its wait timed (the pipeline must not starve the step)."""
        t0 = time.perf_counter()
        try:
            batch = next(self.iterator)
        except tf.errors.OpError as exc:
            raise damaged_shard_error(self.run.train_files, exc) from None
        except StopIteration:
            # The data yields exactly the run's steps, so only a restored data position from
            # another version of the input pipeline (the stateful one changed) ends it early.
            raise LmtrainError(
                f"the training data ran out at step {self.step} of {self.run.total_steps}: the checkpoint's data "
                f"position does not fit this version's input pipeline; start the run again with --force, or "
                f"evaluate the run as it is") from None
        self.figures.wait += time.perf_counter() - t0
        return batch

    def _log(self, train_loss: float) -> None:
        """Close the logging interval: TensorBoard scalars and the progress bar's figures."""
        run = self.run
        run.step.loss_tracker.reset_state()
        f = self.figures.close(train_loss)
        with self.writer.as_default(step=self.step):
            tf.summary.scalar(f"train/{run.loss_kind}_loss", train_loss)
            tf.summary.scalar("train/tokens_per_sec", f.tokens_per_sec)
            tf.summary.scalar("train/gflops_per_sec", f.gflops)
            tf.summary.scalar("train/data_wait_share", f.wait_share)
            tf.summary.scalar("train/learning_rate", _applied_rate(run.optimizer))
            tf.summary.scalar("train/skipped_batches", self.skipped)
        postfix = {"loss": f"{train_loss:.3f}", "tok_s": f"{f.tokens_per_sec:,.0f}", "wait": f"{f.wait_share:.1%}"}
        if self.skipped:
            postfix["skipped"] = self.skipped
        self.bar.set_postfix(postfix)

    def _validate(self, stop: StopSignals, t_end: float) -> bool:
        """Score the validation split (full softmax) and act on it: best checkpoint, the
        averaging trigger, the plateau rate; True where the run should stop early."""
        run, t = self.run, self.run.config.train
        average = run.average
        averaged = average is not None and average.started
        with pending_applied(run.optimizer, run.model.trainable_variables), _averaged(average):
            score = split_nll(run.model, run.valid_files, t.seq_len, t.batch_size, run.meta.splits["valid"].tokens,
                              windows=t.eval_windows, progress=run.progress, max_tokens=t.eval_tokens,
                              should_stop=lambda: stop.signum is not None, label="valid", prior=self.prior)
        if stop.signum is not None:  # stopped within a batch: the step is kept, not this
            self.bar.write(f"step {self.step}: validation stopped by {signal.Signals(stop.signum).name} after "
                           f"{int(score.tokens)} tokens, not recorded")
            return False
        self.valid_ppl = perplexity(score.nll / score.tokens)
        verdict = run.validation.record(self.step, self.valid_ppl)
        with self.writer.as_default(step=self.step):
            tf.summary.scalar("valid/perplexity", self.valid_ppl)
            tf.summary.scalar("valid/train_seconds", t_end - self.loop_started - self.not_training)
        line = (f"step {self.step}: valid perplexity {self.valid_ppl:.2f} (full softmax, {int(score.tokens)} "
                f"tokens, {score.how}{', averaged weights' if averaged else ''})")
        if verdict.improved and self.best_store is not None:
            self.save(self.best_store)  # loading applies the pending LazyAdam steps, as evaluated
            line += ", best so far"
        if average is not None and not verdict.improved and not average.started:
            average.start()  # the non-monotone trigger (see lmtrain.fit.averaging)
            line += "; averaging the weights from here"
        if verdict.lower_rate:
            rate = _current_rate(run.optimizer) * t.plateau_factor
            run.optimizer.learning_rate.assign(rate)
            line += f"; learning rate lowered to {rate:.3g}"
        self.bar.write(line)
        if self.step >= run.steps_per_epoch and not self.warned_stuck and score.unigram_nll is not None:
            unigram = perplexity(score.unigram_nll / score.tokens)
            if self.valid_ppl > STUCK_SHARE * unigram:
                self.warned_stuck = True
                self.bar.write(_stuck_message(self.step, self.step / run.steps_per_epoch, self.valid_ppl, unigram))
        return verdict.stop

    def _heed(self, stop: StopSignals) -> None:
        """Ctrl-C / SIGTERM: the step is done; keep it and stop (every worker, after the same step)."""
        run = self.run
        requested = stop.signum is not None
        if run.distribution.workers > 1:  # every step, on every worker: a collective
            requested = run.distribution.any_worker(requested)
        if not requested:
            return
        signum = stop.signum if stop.signum is not None else signal.SIGTERM
        cause = signal.Signals(signum).name if stop.signum is not None else "a signal to another worker"
        path = self.store.latest() if self.saved_at == self.step else self.save()
        where = (f"checkpoint {path}" if run.distribution.is_chief
                 else f"the chief wrote the checkpoint to {run.paths.checkpoints}")
        raise Interrupted(f"stopped by {cause} after step {self.step}; {where}; run the same command to continue",
                          signum)

    def save(self, target: CheckpointStore | None = None) -> str | None:
        """Write a checkpoint (`target`: the best-so-far store) on the chief; never non-finite weights."""
        run, target = self.run, target or self.store
        if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in run.model.trainable_variables):
            # An update can overflow the weights with a finite loss (a huge learning rate):
            # checked here, once per checkpoint, so such weights are never saved. (On every
            # worker: they hold the same weights, so they stop together.)
            raise LmtrainError(_nan_message(self.step, self.store.latest(), what="weights"))
        if not run.distribution.is_chief:
            return None
        self.step_var.assign(self.step)
        self.skipped_var.assign(self.skipped)
        if self.carry is not None:
            self.carry.store()
        path = target.save(self.checkpoint, self.step)
        if target is self.store:
            self.saved_at = self.step
        return path

    def close(self) -> None:
        self.bar.close()
        self.writer.close()

    def result(self, wall_seconds: float) -> FitResult:
        run, f = self.run, self.figures
        return FitResult(
            run_dir=run.paths.root, step=self.step, train_loss=f.train_loss, valid_perplexity=self.valid_ppl,
            tokens_per_sec=f.tokens_per_sec, data_wait_share=f.wait_share, wall_seconds=wall_seconds,
            skipped_batches=self.skipped, best_step=run.validation.best_step,
            best_perplexity=run.validation.best_perplexity, stopped_early=run.validation.stopped,
            wrote_run_dir=run.distribution.is_chief, softmax=run.loss_kind, gflops_per_sec=f.gflops,
            train_seconds=time.perf_counter() - self.loop_started - self.not_training)


class _Interval:
    """The figures of one logging interval: tokens, input wait and time, and what they come to."""

    def __init__(self, flops_per_token: float) -> None:
        # Matmul FLOPs per training token, forward and backward: what tokens/s is worth in GFLOP/s.
        self.flops_per_token = flops_per_token
        self.tokens, self.wait, self.start = 0.0, 0.0, time.perf_counter()
        self.train_loss: float | None = None
        self.tokens_per_sec: float | None = None
        self.gflops: float | None = None
        self.wait_share: float | None = None

    def close(self, train_loss: float) -> "_Interval":
        """Record the interval's figures (the loss is averaged over it) and start the next one."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.train_loss, self.tokens_per_sec = train_loss, self.tokens / elapsed
        self.gflops = self.tokens_per_sec * self.flops_per_token / 1e9
        self.wait_share = self.wait / elapsed
        self.tokens, self.wait, self.start = 0.0, 0.0, time.perf_counter()
        return self


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


def _current_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate now (a mirrored variable under a strategy, so read as a tensor): the
    plateau schedule lowers this one."""
    return float(tf.convert_to_tensor(optimizer.learning_rate))


def _applied_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the last step applied: SGD's warm-up takes its share of the rate."""
    factor = float(optimizer.warmup_factor()) if isinstance(optimizer, SGD) else 1.0
    return _current_rate(optimizer) * factor


# A validation above this share of the unigram model's perplexity, from the first epoch's end on,
# means the model has learned next to nothing beyond word frequencies (`_stuck_message`).
STUCK_SHARE = 0.95


def _stuck_message(step: int, epochs: float, ppl: float, unigram: float) -> str:
    """One line: the model is no better than the unigram model, and what to change."""
    where = "above" if ppl > unigram else f"within {1 - STUCK_SHARE:.0%} of"
    return (f"warning: step {step} ({epochs:.1f} epochs): validation perplexity {ppl:.2f} is {where} the unigram "
            f"model's {unigram:.2f} (word frequencies alone): the model is stuck at its start or has diverged; start "
            f"it again (--force) with a lower train.learning_rate or a longer train.warmup_steps")


def _check_same_start(distribution: Distribution, step: int, run: RunPaths) -> None:
    """Every worker must start from the same checkpoint: each restores from `train.run_dir`,
    which therefore has to be one directory all of them see (shared storage)."""
    steps = distribution.gathered(step)
    if min(steps) != max(steps):
        raise LmtrainError(
            f"train.run_dir: the workers found different checkpoints in {run.root} (steps {min(steps)} to "
            f"{max(steps)}); with train.distribute=multi_worker it must be one directory every worker sees"
        )


