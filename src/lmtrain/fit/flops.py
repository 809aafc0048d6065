"""What a training step costs in matrix multiplies: each matmul's shape, and their FLOPs.

`fit` divides the FLOPs by the step time to log the arithmetic rate reached (GFLOP/s), and
`benchmarks/utilisation_bench.py` times `tf.matmul` at each of these shapes to find the rate the
machine allows for this very step (its shape-aware ceiling). Only the matmuls count: the LSTM's
input and recurrent products, the projection and the output layer (the sampled logits, or the
full [D, V] product), forward and backward; gathers, gate arithmetic, the true class's logit (a
dot product per row) and the optimizer are left out, as they are in the usual 6 x parameters x
tokens estimate this refines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmtrain.fit.step import TrainStep


@dataclass(frozen=True)
class Matmul:
    """One [m, k] x [k, n] product a step runs `count` times (the recurrent ones once per time step)."""

    part: str  # "lstm", "projection" or "output"
    what: str  # e.g. "lstm_0 recurrent, forward"
    m: int
    k: int
    n: int
    count: int = 1

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.k * self.n * self.count


def _product(part: str, what: str, rows: int, width: int, out: int) -> list[Matmul]:
    """A [rows, width] x [width, out] product and the two of its backward pass (the input's
    gradient [rows, out] x [out, width] and the weight's [width, rows] x [rows, out])."""
    return [Matmul(part, f"{what}, forward", rows, width, out),
            Matmul(part, f"{what}, input gradient", rows, out, width),
            Matmul(part, f"{what}, weight gradient", width, rows, out)]


def step_matmuls(step: TrainStep, batch_size: int, seq_len: int) -> list[Matmul]:
    """The matmuls of one training step (its model as built: its projection, if tying or
    projection_dim gave it one; its softmax, sampled or full) on a batch of [batch_size, seq_len].

    The LSTM's as the fused layer runs them: the input projection of all steps as one product,
    the recurrent one per time step ([B, H] x [H, 4H] forward, [B, 4H] x [4H, H] backward), and
    the three weight and input gradients as products over all B x T rows.
    """
    model = step.model
    rows, h, gates, r = batch_size * seq_len, model.hidden_dim, 4 * model.hidden_dim, model.state_width
    out: list[Matmul] = []
    width = model.embedding_dim
    for i in range(model.num_layers):
        name = f"lstm_{i}"
        out += _product("lstm", f"{name} input", rows, width, gates)
        out += [Matmul("lstm", f"{name} recurrent, forward", batch_size, r, gates, seq_len),
                Matmul("lstm", f"{name} recurrent, state gradient", batch_size, gates, r, seq_len),
                Matmul("lstm", f"{name} recurrent, weight gradient", r, rows, gates)]
        if model.proj_size:  # the LSTMP's projection, per step forward and backward
            out += [Matmul("lstm", f"{name} projection, forward", batch_size, h, r, seq_len),
                    Matmul("lstm", f"{name} projection, state gradient", batch_size, r, h, seq_len),
                    Matmul("lstm", f"{name} projection, weight gradient", h, rows, r)]
        width = r
    if model.projection_dim:
        out += _product("projection", "projection", rows, r, model.projection_dim)
    classes = model.vocab_size if step.negatives is None else step.negatives  # every id, or the negatives drawn
    what = "logits, full" if step.negatives is None else "logits, sampled"
    out += _product("output", what, rows, model.output_dim, classes)
    return out


def step_flops(step: TrainStep, tokens: int) -> float:
    """Matmul FLOPs of one training step (forward and backward) over `tokens` tokens (B x T)."""
    return sum(mm.flops for mm in step_matmuls(step, tokens, 1))
