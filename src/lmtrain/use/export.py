"""`lmtrain export`: a SavedModel that plain TensorFlow (or TensorFlow Serving) can use.

A `tf.Module` holding the model's variables, the tokenizer as an asset, and one `tf.function`
per endpoint, each also saved as a serving signature. (Keras' `ExportArchive` does the same
but cannot carry an asset file.) Everything is float32 log-probabilities over the full vocabulary
(the exact softmax; the sampled softmax exists only in training). Endpoints:

    next_token(tokens [B, T] int32, lengths [B] int32) -> log_probs [B, V]
        the next-token distribution after tokens[b, :lengths[b]] (rows right-padded to T)
    step(token [B] int32, h [L, B, R], c [L, B, H]) -> log_probs [B, V], h, c
        one decoding step with the LSTM state carried by the caller (streaming generation);
        R is hidden_dim, or proj_size in an LSTMP
    zero_state(batch_size int32) -> h, c
        the state to start from; then feed `</s>` (id 1) to start a new document
    score(tokens [B, T] int32) -> log_probs [B, T]
        log P(tokens[t] | tokens[:t]) with `</s>` as the context of the first token
    metadata() -> vocab_size, num_layers, hidden_dim, state_width (h's: proj_size in an LSTMP), eos_id,
                  newline_id, unk_id

The SentencePiece model is an asset of the export (`assets/tokenizer.model`; endpoint
`tokenizer_path()` gives its path once loaded). Text is encoded one line at a time, each line
followed by the newline id, and a document ends with `</s>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tensorflow as tf

from lmtrain.data.tokenizer import EOS_ID, NL_ID, UNK_ID
from lmtrain.errors import LmtrainError, describe_write_error
from lmtrain.model import LanguageModel
from lmtrain.paths import EXPORT_INFO, publish_dir


def export_model(model: LanguageModel, out_dir: Path, tokenizer_path: Path | None, info: dict[str, Any]) -> Path:
    """Write the SavedModel to `out_dir` (`paths.publish_dir`: a failed export leaves any old one
    in place, and only an earlier export is replaced)."""

    def fill(tmp: Path) -> None:
        module = _serving_module(model, tokenizer_path)
        signatures = {name: getattr(module, name).get_concrete_function() for name in module.endpoints}
        try:
            tf.saved_model.save(module, str(tmp), signatures=signatures)
        except tf.errors.OpError as exc:
            raise LmtrainError(f"export could not write {out_dir}: {describe_write_error(exc)}") from None
        (tmp / EXPORT_INFO).write_text(json.dumps({"format": "savedmodel", **info}, indent=1))

    return publish_dir(Path(out_dir), fill)


def _serving_module(model: LanguageModel, tokenizer_path: Path | None) -> tf.Module:
    """The object saved: endpoints are closures over the model, which is not itself a child
    (saving a Keras model object would also trace its default serving function, on an input
    of unknown shape that our model cannot take); its weights are tracked as a list."""
    module = tf.Module(name="lmtrain")
    module.weights = list(model.weights)
    ids = tf.TensorSpec([None, None], tf.int32, name="tokens")
    h_spec = tf.TensorSpec([model.num_layers, None, model.state_width], tf.float32, name="h")  # P in an LSTMP
    c_spec = tf.TensorSpec([model.num_layers, None, model.hidden_dim], tf.float32, name="c")

    def next_token(tokens: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        hidden = model(tokens, training=False)  # (B, T, H); causal, so right padding is harmless
        last = tf.gather(hidden, lengths - 1, batch_dims=1)  # (B, H)
        return {"log_probs": tf.nn.log_softmax(model.logits(last))}

    def step(token: tf.Tensor, h: tf.Tensor, c: tf.Tensor) -> dict[str, tf.Tensor]:
        log_probs, (h2, c2) = model.step(token[:, None], (h, c))
        return {"log_probs": log_probs, "h": h2, "c": c2}

    def zero_state(batch_size: tf.Tensor) -> dict[str, tf.Tensor]:
        h, c = model.zero_state(batch_size)
        return {"h": h, "c": c}

    def score(tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = tf.shape(tokens)[0]
        context = tf.concat([tf.fill([batch, 1], EOS_ID), tokens[:, :-1]], axis=1)
        nll, _ = model.sequence_nll(context, tokens, model.zero_state(batch))
        return {"log_probs": -nll}

    def metadata() -> dict[str, tf.Tensor]:
        values = {"vocab_size": model.vocab_size, "num_layers": model.num_layers, "hidden_dim": model.hidden_dim,
                  "state_width": model.state_width, "eos_id": EOS_ID, "newline_id": NL_ID, "unk_id": UNK_ID}
        return {k: tf.constant(v, tf.int32) for k, v in values.items()}

    endpoints = {
        "next_token": (next_token, [ids, tf.TensorSpec([None], tf.int32, name="lengths")]),
        "step": (step, [tf.TensorSpec([None], tf.int32, name="token"), h_spec, c_spec]),
        "zero_state": (zero_state, [tf.TensorSpec([], tf.int32, name="batch_size")]),
        "score": (score, [ids]),
        "metadata": (metadata, []),
    }
    if tokenizer_path is not None:
        module.tokenizer = tf.saved_model.Asset(str(tokenizer_path))  # copied into assets/
        endpoints["tokenizer_path"] = (lambda: {"path": module.tokenizer.asset_path}, [])
    for name, (fn, signature) in endpoints.items():
        setattr(module, name, tf.function(fn, input_signature=signature))
    module.endpoints = list(endpoints)
    return module
