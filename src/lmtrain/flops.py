"""What a training step costs in matrix-multiply FLOPs, from the model's shapes alone.

`fit` divides it by the step time to log the arithmetic rate reached (GFLOP/s), the figure to
hold against the machine's matmul rate at the same shapes. Only the matmuls count: the LSTM's
input and recurrent products, the projection, and the output layer (the sampled logits, or the
full [D, V] product); gathers, gate arithmetic and the optimizer are left out, as they are in
the usual 6 x parameters x tokens estimate this refines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmtrain.model import LanguageModel

# A step's backward pass does two matmuls of each forward one's size (the gradients of both
# operands), so a step costs three forward passes.
FORWARD_AND_BACKWARD = 3


def forward_flops_per_token(model: LanguageModel) -> float:
    """Multiply-add FLOPs (2 per multiply-add) of one token's forward pass through `model`, as
    built (its projection, if tying or projection_dim gave it one; the sampled logits, the true
    one and num_sampled negatives, or all vocab_size under the full softmax)."""
    flops, width = 0.0, model.embedding_dim
    for _ in range(model.num_layers):
        flops += 2.0 * 4 * model.hidden_dim * (width + model.hidden_dim)  # four gates, input and recurrent
        width = model.hidden_dim
    if model.projection_dim:
        flops += 2.0 * model.hidden_dim * model.projection_dim
    logits = model.vocab_size if model.softmax == "full" else model.num_sampled + 1
    return flops + 2.0 * model.output_dim * logits


def step_flops(model: LanguageModel, tokens: int) -> float:
    """Matmul FLOPs of one training step (forward and backward) over `tokens` tokens (B x T)."""
    return FORWARD_AND_BACKWARD * tokens * forward_flops_per_token(model)
