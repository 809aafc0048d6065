"""What a config's null and `auto` keys stand for in one run, decided once: `resolve` sets every
key the run decides (tying, the schedule and its warm-up, the learning rate, the regularisation,
embedding dropout, the projection a tied wider LSTM needs, the softmax and its negatives, the
precision, XLA, the LSTM implementation) to a number or a name.

`fit` resolves its config once, saves the result in the run directory (so its `config.yaml`
says what the run used) and builds from it; `lmtrain.use.load` resolves a run directory's
config the same way: a resolved config comes back unchanged, and one saved before a key was
resolved gets what that version decided for it. The rules themselves, numbers in and numbers
out, are `lmtrain.config.rules`'; the lines `fit` prints about the choices are
`lmtrain.config.explain`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmtrain.config.rules import (
    LIGHT,
    REGULARISATION_KEYS,
    exposure,
    parameter_count,
    regularisation,
    sgd_warmup_steps,
    warmup_share_steps,
)
from lmtrain.config.schema import Config, ModelConfig, TrainConfig
from lmtrain.errors import ConfigError

# The keys a builder needs decided (the others it can decide itself from the vocabulary).
MODEL_KEYS = ("tie_weights", "embedding_dropout", *REGULARISATION_KEYS)
RUN_KEYS = ("train.schedule", *(f"model.{k}" for k in MODEL_KEYS))
# Keys whose null (or auto) a resumed run takes from its start, where it asks nothing else.
# (Not lstm_impl: both implementations compute the same function with the same weights, so the
# machine running the command decides `auto` again: a run started on a CPU resumes on a GPU's cuDNN.)
_KEPT_MODEL = ("tie_weights", "embedding_dropout", "projection_dim", "num_sampled", "softmax")
_KEPT_TRAIN = ("schedule", "warmup_steps", "learning_rate", "precision", "jit_compile")
_OPEN = (None, "auto")


def open_keys(config: Config) -> list[str]:
    """The keys of `config` still null that a builder needs decided: empty for a resolved config."""
    sections = {"model": config.model, "train": config.train}
    return [key for key in RUN_KEYS if getattr(sections[key.split(".")[0]], key.split(".")[1]) is None]


def check_resolved(config: Config, who: str) -> None:
    """Raise if `config` has a key open that `resolve` decides (a builder was handed a raw config)."""
    if keys := open_keys(config):
        raise ValueError(f"{who}: {', '.join(keys)} null, which depend on the run; "
                         f"pass lmtrain.config.resolve.resolve(config, total_steps, ...)")


def check_resolved_model(m: ModelConfig, who: str) -> None:
    """Raise if the model section has a key open that the model needs decided."""
    if keys := [f"model.{k}" for k in MODEL_KEYS if getattr(m, k) is None]:
        raise ValueError(f"{who}: {', '.join(keys)} null, which depend on the run; "
                         f"pass the model section of lmtrain.config.resolve.resolve(config, total_steps, ...)")


def run_exposure(config: Config, total_steps: int, train_tokens: int, vocab_size: int) -> tuple[float, float, int]:
    """(exposure, passes, parameters) of a run of `total_steps` steps of `config` (tying made)
    over `train_tokens` training tokens at `vocab_size` ids."""
    m, t = config.model, config.train
    params = parameter_count(m.embedding_dim, m.hidden_dim, m.num_layers, vocab_size, bool(m.tie_weights),
                             m.projection_dim, m.proj_size)
    seen = total_steps * t.batch_size * t.seq_len
    return exposure(seen, train_tokens, params), seen / max(train_tokens, 1), params


def resolve(config: Config, total_steps: int, started: Config | None = None, train_tokens: int | None = None,
            vocab_size: int | None = None) -> Config:
    """`config` with every choice it leaves to a run of `total_steps` steps made.

    - model.tie_weights and train.schedule: from the run's length (`rules.short_run`);
    - train.warmup_steps: 5% of the run under the warm-up schedules, `rules.sgd_warmup_steps`
      for SGD at a steady rate, 0 for Adam at a steady rate;
    - train.learning_rate: `TrainConfig.rate` (from the width);
    - the regularisation keys (`REGULARISATION_KEYS`): from the run's exposure to
      `train_tokens` training tokens at `vocab_size` ids (`rules.regularisation`; unknown data
      counts as a single pass over plenty of it: the light setting); embedding_dropout: dropout;
    - model.projection_dim: the embedding width where a tied LSTM is wider;
    - with `vocab_size`: model.softmax (`choose_softmax`) and, sampled, model.num_sampled;
    - train.precision, train.jit_compile and model.lstm_impl `auto`: this machine's choice.

    `started`: the config saved by the run when it first started (its run directory). Its
    choices are kept where the asked config leaves a key open, so a run resumed with a longer
    max_steps keeps its architecture, schedule, rate and regularisation; a run directory from
    before a key was resolved keeps what that version made of it. An explicit key always wins.
    Idempotent: a config with nothing left open comes back unchanged.
    """
    m, t = config.model, config.train
    if started is not None:
        m = _kept(m, started.model, _KEPT_MODEL)
        t = _kept(t, started.train, _KEPT_TRAIN)
        m = dataclasses.replace(m, **{k: _first(getattr(m, k), getattr(started.model, k), LIGHT[k])
                                      for k in REGULARISATION_KEYS})
    m = dataclasses.replace(m, tie_weights=m.ties(total_steps))
    if m.tie_weights and m.projection_dim is None and m.lstm_output_dim != m.embedding_dim:
        m = dataclasses.replace(m, projection_dim=m.embedding_dim)  # tying a wider LSTM projects it
    t = dataclasses.replace(t, schedule=t.schedule_for(total_steps, m.hidden_dim),
                            learning_rate=t.rate(m.hidden_dim))
    t = _warmup(t, total_steps, started)
    if any(getattr(m, k) is None for k in REGULARISATION_KEYS):
        chosen = dict(LIGHT)
        if train_tokens and vocab_size:
            level, passes, _ = run_exposure(dataclasses.replace(config, model=m, train=t), total_steps, train_tokens,
                                            vocab_size)
            chosen = regularisation(level, passes)
        m = dataclasses.replace(m, **{k: _first(getattr(m, k), chosen[k]) for k in REGULARISATION_KEYS})
    m = dataclasses.replace(m, embedding_dropout=_first(m.embedding_dropout, m.dropout))
    if vocab_size is not None and m.softmax == "auto":
        m = dataclasses.replace(m, softmax=choose_softmax(m, vocab_size)[0])
    if vocab_size is not None and m.softmax == "sampled" and m.num_sampled is None:
        m = dataclasses.replace(m, num_sampled=m.negatives(vocab_size))
    return dataclasses.replace(config, model=_machine_model(m), train=_machine_train(t))


def choose_softmax(m: ModelConfig, vocab_size: int) -> tuple[str, str]:
    """The training loss `model.softmax` stands for at this vocabulary ("sampled" or "full"),
    and why, in words `fit` prints. Decided from the config and the vocabulary alone, so a
    resumed run, `eval` and the benchmarks all make the same choice.

    auto is the full softmax only where the sampled one cannot run (k = `m.negatives(V)`
    distinct negatives need more than k ids), and the sampled softmax everywhere else. The
    full softmax was meant for small vocabularies, where it costs no more (0.95-0.98x the
    sampled step up to 2 x num_sampled ids, benchmarks/softmax_bench.py), but at 2,000 ids the
    sampled model trained with 1024 negatives came out better at equal steps in every run:
    4.9% lower test perplexity at the demo's shapes (make compare), 4.7-5.5% lower validation
    perplexity for a small model after 600 and 6,000 steps.
    """
    from lmtrain.keras.negatives import negatives_rule  # plain Python, no TensorFlow

    k = m.negatives(vocab_size)
    rule = negatives_rule(m.output_bias_init == "unigram")
    source = "model.num_sampled" if m.num_sampled is not None else f"model.num_sampled null: {rule}"
    negatives = f"{k:,} distinct negatives a step ({source})"
    if m.softmax == "sampled":
        m.check_negatives(vocab_size)
        return "sampled", f"model.softmax=sampled: {negatives}"
    if m.softmax == "full":
        return "full", "model.softmax=full"
    if m.negatives_problem(vocab_size):
        return "full", (f"model.softmax=auto: {negatives} would not be fewer than the {vocab_size:,} ids, so the "
                        f"sampled softmax cannot run; the full one costs no more here")
    return "sampled", (f"model.softmax=auto: {vocab_size:,} ids, {negatives}; the full softmax only where the "
                       f"negatives would not be fewer than the ids")


def _kept(section: Any, started: Any, keys: tuple[str, ...]) -> Any:
    """`section` with each of `keys` that it leaves open (null or auto) taken from `started`."""
    return dataclasses.replace(section, **{k: getattr(started, k) for k in keys if getattr(section, k) in _OPEN})


def _warmup(t: TrainConfig, total_steps: int, started: Config | None) -> TrainConfig:
    """train.warmup_steps where it is null: 5% of the run under warmup_cosine and
    warmup_stable_decay, `sgd_warmup_steps` for SGD at a constant or plateau rate, 0 for Adam
    there (it moves each weight by about its rate). A resumed run keeps its first choice; a run
    started before the key was resolved keeps null, which the builders read as that version did
    (5% of the run's steps as they are now under the warm-up schedules; no warm-up elsewhere)."""
    steady = t.schedule in ("constant", "plateau")
    if steady and t.warmup_steps and t.optimizer != "sgd":
        raise ConfigError(f"train.warmup_steps: {t.warmup_steps} is not used by train.optimizer={t.optimizer} at the "
                          f"{t.schedule} schedule (only SGD warms up a steady rate); use train.schedule: warmup_cosine "
                          f"or warmup_stable_decay, or leave it null")
    if t.warmup_steps is not None or started is not None:
        return t
    if not steady:
        return dataclasses.replace(t, warmup_steps=warmup_share_steps(total_steps))
    return dataclasses.replace(t, warmup_steps=sgd_warmup_steps(total_steps) if t.optimizer == "sgd" else 0)


def _machine_model(m: ModelConfig) -> ModelConfig:
    """model.lstm_impl auto: fused where TensorFlow sees no GPU, keras (cuDNN) where it sees one."""
    if m.lstm_impl != "auto":
        return m
    from lmtrain.keras.lstm import choose_impl

    return dataclasses.replace(m, lstm_impl=choose_impl("auto"))


def _machine_train(t: TrainConfig) -> TrainConfig:
    """train.precision auto (`choose_precision`) and train.jit_compile auto (off: on a GPU, XLA
    would replace the cuDNN LSTM kernel, which cannot be compiled, with a slower loop, and on a
    CPU it did not pay off here)."""
    if t.precision == "auto":
        from lmtrain.config.precision import choose_precision  # reads the devices: imports TensorFlow

        t = dataclasses.replace(t, precision=choose_precision("auto")[0])
    if t.jit_compile == "auto":
        t = dataclasses.replace(t, jit_compile=False)
    return t


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next(v for v in values if v is not None)
