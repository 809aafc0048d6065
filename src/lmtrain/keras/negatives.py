"""How many negatives a sampled softmax draws, and the one check on that number.

Plain Python (no TensorFlow), so `lmtrain.config.schema` can validate a YAML file with it before
anything heavy is imported. `SampledSoftmax`, the samplers and `lmtrain fit` all ask here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The bounds of default_negatives: the upper one with a zero or with a unigram output bias at the start.
MIN_NEGATIVES, MAX_NEGATIVES, MAX_NEGATIVES_UNIGRAM_BIAS = 1024, 4096, 2048


def default_negatives(vocab_size: int, unigram_bias: bool = False) -> int:
    """Negatives per sampled step when none are given: an eighth of the vocabulary, at least
    1,024 and at most 4,096, or at most 2,048 where the output bias starts at the unigram
    (`lmtrain fit`'s model.output_bias_init: unigram, its default; the library's SampledSoftmax
    where `counts=` is given).

    Why it grows with V: a rare word's bias moves only in the steps that draw it, and more
    negatives draw it more often; from a zero bias, 1,024 negatives beat the full softmax at 2k
    and 8k ids but not at 25k words. Why the unigram bias needs fewer: it starts rare words where
    they belong, and the step's output products ([B*T, D] x [D, k] and their gradients) grow
    with k. The measurements behind both bounds: benchmarks/results/compare-2026-12-02-negatives.md
    and output-bias-2026-12-04.md.
    """
    cap = MAX_NEGATIVES_UNIGRAM_BIAS if unigram_bias else MAX_NEGATIVES
    return min(cap, max(MIN_NEGATIVES, int(vocab_size) // 8))


def negatives_rule(unigram_bias: bool) -> str:
    """`default_negatives` in the words messages use."""
    cap = MAX_NEGATIVES_UNIGRAM_BIAS if unigram_bias else MAX_NEGATIVES
    return f"an eighth of the ids, {MIN_NEGATIVES:,}-{cap:,}"


def negatives_problem(num_sampled: Any, vocab_size: int) -> str | None:
    """What is wrong with drawing `num_sampled` distinct negatives from `vocab_size` ids, in words
    for a message, or None where it can be done: an integer from 1 to vocab_size - 1 (every
    negative must differ from the others, and at least one id must be left to be the target)."""
    integer = isinstance(num_sampled, (int, np.integer)) and not isinstance(num_sampled, bool)
    if not integer or not 0 < num_sampled < vocab_size:
        return f"must be an integer from 1 to vocab_size - 1 ({int(vocab_size) - 1}); got {num_sampled!r}"
    return None
