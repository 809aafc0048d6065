"""The lines `fit` prints about what `lmtrain.config.resolve.resolve` made of the keys a config
left open, and why: the run length's choices, the learning rate, the regularisation."""

from __future__ import annotations

from lmtrain.config.resolve import run_exposure
from lmtrain.config.rules import (
    LIGHT_EXPOSURE,
    MIN_PASSES,
    REGULARISATION_KEYS,
    STRONG_EXPOSURE,
    short_run,
    short_run_steps,
)
from lmtrain.config.schema import Config


def rate_words(asked: Config, config: Config) -> str:
    """How `fit` names the learning rate of `config` and where it came from (`asked`'s key)."""
    t = config.train
    rate = t.rate(config.model.hidden_dim)
    source = ("train.learning_rate" if asked.train.learning_rate is not None
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
    lines.append(f"learning rate: {rate_words(asked, config)}")
    if any(getattr(asked.model, k) is None for k in REGULARISATION_KEYS):
        words = regularisation_words(asked, config, total_steps, train_tokens, vocab_size, resumed)
        lines.append(f"regularisation: {words}")
    return lines
