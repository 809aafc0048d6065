"""What a config's null keys stand for in one run, decided once: `resolve` makes the choices that
depend on the run's length and data (tying, the schedule, the regularisation), and `describe`
gives the lines `fit` prints to say what it chose and why.

`fit` resolves its config once, saves the result in the run directory, and builds from it;
`lmtrain.trained.load_run` resolves a run directory's config the same way (a config that is
already resolved comes back unchanged), so every verb builds the model `fit` trained. The
builders (`lmtrain.build`, `lmtrain.trainstep`) take a resolved config and refuse an open one.
The rules themselves, numbers in and numbers out, are `lmtrain.runlength`'s; the ones a single
key needs without the run (the learning rate, the softmax) are the config's own methods.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmtrain.config import Config
from lmtrain.errors import ConfigError
from lmtrain.runlength import (
    LIGHT,
    LIGHT_EXPOSURE,
    MIN_PASSES,
    REGULARISATION_KEYS,
    STRONG_EXPOSURE,
    exposure,
    parameter_count,
    regularisation,
    sgd_warmup_steps,
    short_run,
    short_run_steps,
)

RUN_KEYS = ("model.tie_weights", "train.schedule", *(f"model.{k}" for k in REGULARISATION_KEYS))


def open_keys(config: Config) -> list[str]:
    """The keys of `config` still null that `resolve` decides: empty for a resolved config."""
    sections = {"model": config.model, "train": config.train}
    return [key for key in RUN_KEYS if getattr(sections[key.split(".")[0]], key.split(".")[1]) is None]


def check_resolved(config: Config, who: str) -> None:
    """Raise if `config` has a key open that `resolve` decides (a builder was handed a raw config)."""
    if keys := open_keys(config):
        raise ValueError(f"{who}: {', '.join(keys)} null, which depend on the run; "
                         f"pass lmtrain.resolve.resolve(config, total_steps, ...)")


def run_exposure(config: Config, total_steps: int, train_tokens: int, vocab_size: int) -> tuple[float, float, int]:
    """(exposure, passes, parameters) of a run of `total_steps` steps of `config` (tying made)
    over `train_tokens` training tokens at `vocab_size` ids."""
    m, t = config.model, config.train
    params = parameter_count(m.embedding_dim, m.hidden_dim, m.num_layers, vocab_size, bool(m.tie_weights),
                             m.projection_dim)
    seen = total_steps * t.batch_size * t.seq_len
    return exposure(seen, train_tokens, params), seen / max(train_tokens, 1), params


def resolve(config: Config, total_steps: int, started: Config | None = None, train_tokens: int | None = None,
            vocab_size: int | None = None) -> Config:
    """`config` with the choices it leaves to the run made for a run of `total_steps` steps:
    model.tie_weights and train.schedule where they are null (see `short_run`), and the
    regularisation keys (`REGULARISATION_KEYS`) where they are null, from the run's exposure to
    `train_tokens` training tokens at `vocab_size` ids (see `regularisation`; unknown data
    counts as a single pass over plenty of it: the light setting).

    `started`: the config saved by the run when it first started (its run directory). Its
    choices are kept, so a run resumed with a longer max_steps keeps its architecture, schedule
    and regularisation (a run directory from before a key existed keeps what it trained with).
    Idempotent: a config with nothing left open comes back unchanged.
    """
    m, t = config.model, config.train
    if started is not None:
        m = m if m.tie_weights is not None else dataclasses.replace(m, tie_weights=started.model.tie_weights)
        t = t if t.schedule is not None else dataclasses.replace(t, schedule=started.train.schedule)
        m = dataclasses.replace(m, **{k: _first(getattr(m, k), getattr(started.model, k), LIGHT[k])
                                      for k in REGULARISATION_KEYS})
    m = dataclasses.replace(m, tie_weights=m.ties(total_steps))
    t = dataclasses.replace(t, schedule=t.schedule_for(total_steps, m.hidden_dim))
    t = _warmup(t, total_steps, started)
    if any(getattr(m, k) is None for k in REGULARISATION_KEYS):
        chosen = dict(LIGHT)
        if train_tokens and vocab_size:
            level, passes, _ = run_exposure(dataclasses.replace(config, model=m, train=t), total_steps, train_tokens,
                                            vocab_size)
            chosen = regularisation(level, passes)
        m = dataclasses.replace(m, **{k: _first(getattr(m, k), chosen[k]) for k in REGULARISATION_KEYS})
    return dataclasses.replace(config, model=m, train=t)


def _warmup(t: Any, total_steps: int, started: Config | None) -> Any:
    """train.warmup_steps for SGD at a constant or plateau rate, where it is null: `sgd_warmup_steps`
    of the run, or a resumed run's first choice (null in a run started before SGD warmed up: no
    warm-up, as it trained). The warm-up schedules decide their own null (5% of the run); Adam
    at a constant rate has no warm-up."""
    steady = t.schedule in ("constant", "plateau")
    if steady and t.warmup_steps and t.optimizer != "sgd":
        raise ConfigError(f"train.warmup_steps: {t.warmup_steps} is not used by train.optimizer={t.optimizer} at the "
                          f"{t.schedule} schedule (only SGD warms up a steady rate); use train.schedule: warmup_cosine "
                          f"or warmup_stable_decay, or leave it null")
    if not steady or t.optimizer != "sgd" or t.warmup_steps is not None:
        return t
    if started is not None:
        return dataclasses.replace(t, warmup_steps=started.train.warmup_steps)
    return dataclasses.replace(t, warmup_steps=sgd_warmup_steps(total_steps))


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next(v for v in values if v is not None)


def rate_words(config: Config) -> str:
    """How `fit` names the learning rate and where it came from."""
    t = config.train
    rate = t.rate(config.model.hidden_dim)
    source = ("train.learning_rate" if t.learning_rate is not None
              else f"train.learning_rate null: 0.01 x sqrt(512 / model.hidden_dim {config.model.hidden_dim})")
    shape = {"warmup_cosine": "peak of warmup_cosine", "warmup_stable_decay": "peak of warmup_stable_decay",
             "constant": "constant", "plateau": "plateau schedule from"}
    warmup = ""
    if t.optimizer == "sgd" and t.schedule in ("constant", "plateau") and t.warmup_steps:
        warmup = f", reached by a linear warm-up over the first {t.warmup_steps:,} steps"
    return f"{rate:g} ({shape[t.schedule]}{warmup}; {source})"


def length_words(asked: Config, config: Config, total_steps: int, resumed: bool) -> str:
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


def regularisation_words(asked: Config, config: Config, total_steps: int, train_tokens: int, vocab_size: int,
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


def describe(asked: Config, config: Config, total_steps: int, train_tokens: int, vocab_size: int, resumed: bool
             ) -> list[str]:
    """The lines `fit` prints about what `resolve` made of `asked` (`config`): the run length's
    choices and the regularisation where their keys were null, and the learning rate always."""
    lines = []
    if asked.model.tie_weights is None or asked.train.schedule is None:
        lines.append(f"run length: {length_words(asked, config, total_steps, resumed)}")
    lines.append(f"learning rate: {rate_words(config)}")
    if any(getattr(asked.model, k) is None for k in REGULARISATION_KEYS):
        words = regularisation_words(asked, config, total_steps, train_tokens, vocab_size, resumed)
        lines.append(f"regularisation: {words}")
    return lines
