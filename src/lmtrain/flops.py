"""What a training step costs in matrix-multiply FLOPs, from the model's shapes alone.

`fit` divides it by the step time to log the arithmetic rate reached (GFLOP/s), the figure to
hold against the machine's matmul rate at the same shapes. Only the matmuls count: the LSTM's
input and recurrent products, the projection, and the output layer (the sampled logits, or the
full [D, V] product); gathers, gate arithmetic and the optimizer are left out, as they are in
the usual 6 x parameters x tokens estimate this refines.
"""

from __future__ import annotations

from lmtrain.config import Config

# A step's backward pass does two matmuls of each forward one's size (the gradients of both
# operands), so a step costs three forward passes.
FORWARD_AND_BACKWARD = 3


def forward_flops_per_token(config: Config, vocab_size: int, loss: str) -> float:
    """Multiply-add FLOPs (2 per multiply-add) of one token's forward pass.

    `loss`: "sampled" (the true logit and model.num_sampled negatives) or "full" (all
    `vocab_size` logits)."""
    m = config.model
    flops, width = 0.0, m.embedding_dim
    for _ in range(m.num_layers):
        flops += 2.0 * 4 * m.hidden_dim * (width + m.hidden_dim)  # four gates, input and recurrent
        width = m.hidden_dim
    projection = m.projection_dim or (m.embedding_dim if m.tie_weights and m.hidden_dim != m.embedding_dim else None)
    if projection:
        flops += 2.0 * m.hidden_dim * projection
        width = projection
    logits = vocab_size if loss == "full" else m.negatives(vocab_size) + 1
    return flops + 2.0 * width * logits


def step_flops(config: Config, vocab_size: int, loss: str) -> float:
    """Matmul FLOPs of one training step (forward and backward) at train.batch_size x seq_len."""
    tokens = config.train.batch_size * config.train.seq_len
    return FORWARD_AND_BACKWARD * tokens * forward_flops_per_token(config, vocab_size, loss)
