"""`lmtrain generate`: sample text from a prompt with incremental (stateful) decoding.

The prompt is run through the LSTM once; after that every new token costs one LSTM step, since
each layer's (h, c) is carried from call to call. Re-running the whole prefix per token would be
quadratic in the length of the text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from lmtrain.errors import LmtrainError
from lmtrain.model import LanguageModel
from lmtrain.tokenizer import EOS_ID, Tokenizer


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int = 200
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    seed: int = 0
    ignore_eos: bool = False  # go on past the end of a document (for benchmarks): always max_tokens

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise LmtrainError(f"--max-tokens: must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise LmtrainError(f"--temperature: must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k < 0:
            raise LmtrainError(f"--top-k: must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise LmtrainError(f"--top-p: must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str  # prompt and continuation, decoded together (so a word split across them joins)
    tokens: int  # generated
    model_calls: int  # one for the prompt, then one per generated token but the last
    tokens_processed: int  # ids run through the LSTM in all: prompt + generated, not quadratic
    stopped_at_eos: bool
    seconds: float

    def __str__(self) -> str:
        return self.text


def generate_text(model: LanguageModel, tokenizer: Tokenizer, prompt: str, options: SamplingOptions) -> Generation:
    """Continue `prompt` with a loaded model (what `lmtrain generate` and the Python API run)."""
    started = time.perf_counter()
    prompt_ids = tokenizer.encode_text(prompt) if prompt else []
    ids, calls, processed, eos = sample(model, prompt_ids, options)
    return Generation(prompt, tokenizer.decode(prompt_ids + ids), len(ids), calls, processed, eos,
                      time.perf_counter() - started)


def sample(model: LanguageModel, prompt_ids: list[int], options: SamplingOptions) -> tuple[list[int], int, int, bool]:
    """Generated ids, model calls, ids run through the model, and whether `</s>` was reached."""
    rng = np.random.default_rng(options.seed)
    step = model.compiled_step()
    # An empty prompt starts a new document, which is what follows `</s>` in training data.
    context = tf.constant([prompt_ids or [EOS_ID]], dtype=tf.int32)  # (1, P)
    log_probs, state = step(context, model.zero_state(1))
    calls, processed, out = 1, int(context.shape[1]), []
    for _ in range(options.max_tokens):
        token = _choose(log_probs[0].numpy(), options, rng)
        if token == EOS_ID and not options.ignore_eos:
            return out, calls, processed, True
        out.append(token)
        if len(out) == options.max_tokens:
            break  # the last token needs no distribution after it
        token_in = tf.constant([[token]], dtype=tf.int32)  # (1, 1): one new id per call
        log_probs, state = step(token_in, state)
        calls += 1
        processed += int(token_in.shape[1])
    return out, calls, processed, False


def _choose(log_probs: np.ndarray, options: SamplingOptions, rng: np.random.Generator) -> int:
    """Pick one id from log-probabilities with temperature, top-k and top-p (nucleus) cuts."""
    if options.temperature == 0:
        return int(np.argmax(log_probs))
    logits = log_probs.astype(np.float64) / options.temperature
    if options.top_k and options.top_k < logits.size:
        kth = np.partition(logits, -options.top_k)[-options.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if options.top_p < 1.0:
        keep = _nucleus(probs, options.top_p)
        return int(keep[rng.choice(keep.size, p=probs[keep] / probs[keep].sum())])
    return int(rng.choice(probs.size, p=probs))


def _nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Ids of the smallest set of likeliest tokens whose mass reaches `top_p`, likeliest first.

    Sorting all V probabilities per token dominated decoding at large vocabularies, so the
    likeliest m are found with a partial sort (O(V)), doubling m until they hold enough mass.
    """
    m = 256
    while m < probs.size // 8:  # beyond that, one full sort is cheaper than more rounds
        top = np.argpartition(-probs, m - 1)[:m]
        top = top[np.argsort(-probs[top], kind="stable")]
        cumulative = np.cumsum(probs[top])
        if cumulative[-1] >= top_p:
            return top[: int(np.searchsorted(cumulative, top_p)) + 1]
        m *= 2
    top = np.argsort(-probs, kind="stable")
    return top[: int(np.searchsorted(np.cumsum(probs[top]), top_p)) + 1]
