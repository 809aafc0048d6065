"""`lmtrain export --format litert`: the trained model as a LiteRT (TFLite) file for a phone.

Owns the on-device form of a model: the one-token step written with builtin ops only, its
conversion at three precisions, and the check that the file computes what the model computes.

Why the step is written again here rather than converted from the SavedModel's: the model's
LSTM runs a loop over time (a TensorList in the fused kernel, a WHILE in Keras'), which the
converter either rejects or turns into Flex (select TF) ops that phone runtimes leave out. One
token needs no loop: each layer is two FULLY_CONNECTED ops, a SPLIT, LOGISTIC / TANH, MUL and
ADD, the same maths as `keras.layers.LSTMCell` (gates i f c o) on the model's own variables, so
the same weights give the same numbers (the check below holds it to 1e-4 in float).

Signatures, with the state carried by the caller as in the SavedModel's `step`:

    step(token [B] int32, h [L, B, H], c [L, B, H])
        -> log_probs [B, V], h, c, and with top_k > 0 top_ids [B, k] int32, top_log_probs [B, k]
    zero_state(batch_size int32 scalar) -> h, c

Precisions (`quantize`): `none` stores float32 weights; `float16` stores them in half precision
and computes in float32; `int8` is the converter's dynamic-range quantization (weights int8,
activations float). With a tied model the embedding and the output matrix are one array, which
every precision stores once.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from lmtrain.data.meta import DataMeta
from lmtrain.data.records import read_ids, split_files
from lmtrain.data.tokenizer import EOS_ID, NL_ID, UNK_ID
from lmtrain.errors import LmtrainError
from lmtrain.model import LanguageModel
from lmtrain.paths import EXPORT_INFO, DataPaths, publish_dir
from lmtrain.progress import progress_bar

QUANTIZE = ("none", "float16", "int8")
FILE_NAME = "model.tflite"
TOKENIZER_NAME = "tokenizer.model"
FLOAT_TOLERANCE = 1e-4  # largest |log-prob difference| from the model allowed for a float32 file
CHECK_TOKENS = 500  # tokens the export runs through the interpreter
CHECK_CHUNK = 64  # tokens compared at a time (two [64, V] arrays in memory)


@dataclass(frozen=True)
class Check:
    """The file run through the interpreter against the model, token by token at batch 1."""

    tokens: int
    source: str  # where the tokens came from
    max_difference: float  # largest |log-prob difference| over every position and id
    perplexity: float | None  # through the interpreter (None: the tokens were not text)
    model_perplexity: float | None  # the model's own on the same tokens


@dataclass(frozen=True)
class LiteExport:
    path: Path  # the directory: FILE_NAME, TOKENIZER_NAME, EXPORT_INFO
    quantize: str
    file_bytes: int
    parameters: int  # distinct weights (a tied matrix once)
    ops: list[str]
    check: Check | None = None
    signatures: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_per_parameter(self) -> float:
        return self.file_bytes / max(self.parameters, 1)


def parameter_count(model: LanguageModel) -> int:
    """The model's distinct weights (a tied matrix once): what bytes per parameter divides by."""
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def step_module(model: LanguageModel, top_k: int = 0) -> tf.Module:
    """A module whose `step` and `zero_state` are the model's, written for the converter."""
    if not 0 <= top_k <= model.vocab_size:
        raise LmtrainError(f"--top-k {top_k}: must be between 0 and the vocabulary size ({model.vocab_size})")
    layers = [(lstm.cell.kernel.value, lstm.cell.recurrent_kernel.value, lstm.cell.bias.value,
               lstm.cell.projection_kernel.value if model.proj_size else None) for lstm in model.lstms]
    projection = model.projection.kernel.value if model.projection is not None else None
    emb, out_w, out_b = model.embedding.embeddings.value, model.softmax_w.value, model.softmax_b.value
    module = tf.Module(name="lmtrain_litert")
    module.weights = [emb, out_w, out_b, *(v for layer in layers for v in layer if v is not None)] + (
        [projection] if projection is not None else [])
    num_layers, units, width = model.num_layers, model.hidden_dim, model.state_width
    h_spec, c_spec = tf.TensorSpec([num_layers, None, width], tf.float32), tf.TensorSpec([num_layers, None, units])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="token"), h_spec, c_spec])
    def step(token: tf.Tensor, h: tf.Tensor, c: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.gather(emb, token)  # (B, E)
        hs, cs = [], []
        for (kernel, recurrent, bias, w_p), h_prev, c_prev in zip(layers, tf.unstack(h, num_layers),
                                                                  tf.unstack(c, num_layers)):
            z = tf.matmul(x, kernel) + tf.matmul(h_prev, recurrent) + bias  # (B, 4H), gates i f c o
            i, f, g, o = tf.split(z, 4, axis=1)
            cell = tf.sigmoid(f) * c_prev + tf.sigmoid(i) * tf.tanh(g)
            x = tf.sigmoid(o) * tf.tanh(cell)
            if w_p is not None:  # an LSTMP: h = (o * tanh c) W_p, of width P
                x = tf.matmul(x, w_p)
            hs.append(x)
            cs.append(cell)
        if projection is not None:
            x = tf.matmul(x, projection)
        log_probs = tf.nn.log_softmax(tf.matmul(x, out_w, transpose_b=True) + out_b)  # (B, V)
        out = {"log_probs": log_probs, "h": tf.stack(hs), "c": tf.stack(cs)}
        if top_k:
            out["top_log_probs"], out["top_ids"] = tf.math.top_k(log_probs, top_k)
        return out

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="batch_size")])
    def zero_state(batch_size: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"h": tf.zeros(tf.stack([num_layers, batch_size, width]), tf.float32),
                "c": tf.zeros(tf.stack([num_layers, batch_size, units]), tf.float32)}

    module.step, module.zero_state = step, zero_state
    return module


def convert(model: LanguageModel, quantize: str = "none", top_k: int = 0, per_row_scales: bool | None = None
            ) -> bytes:
    """The .tflite file's bytes: `step_module` converted with builtin ops only.

    int8 scales each matrix a FULLY_CONNECTED op reads per output row (the converter's default),
    except in a tied model (`per_row_scales=None` decides by tying): there the embedding's lookup
    (GATHER, which takes one scale per array) and the output layer read one matrix, and per-row
    scales for the latter make the converter store it twice, V x E bytes more. With one scale
    per array it is stored once, at a small cost in perplexity (benchmarks/device_bench.py
    measures both). Arrays of fewer than 1,024 values stay float32 (the converter's rule).
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    module = step_module(model, top_k)
    with tempfile.TemporaryDirectory(prefix="lmtrain-litert-") as tmp:
        tf.saved_model.save(module, tmp, signatures={"step": module.step.get_concrete_function(),
                                                     "zero_state": module.zero_state.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["step", "zero_state"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex: fail instead
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        per_row = not model.tie_weights if per_row_scales is None else per_row_scales
        if quantize == "int8" and not per_row:
            converter._experimental_disable_per_channel = True  # the converter's only switch for it
        return converter.convert()


def operators(content: bytes) -> list[str]:
    """The distinct operators of a .tflite file, read from its flatbuffer: builtin names, and
    custom ops (Flex ops are custom ops named Flex...) as CUSTOM:name."""
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    found = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            found.add(f"CUSTOM:{code.CustomCode().decode()}")
        else:
            found.add(names.get(builtin, str(builtin)))
    return sorted(found)


def stored_arrays(content: bytes, min_bytes: int = 0) -> list[dict[str, Any]]:
    """The constant arrays a .tflite file stores (each buffer once, largest first): name, shape,
    type, bytes and the number of quantization scales (1: one per array; a row count: per row).
    What the weights became, read from the flatbuffer rather than assumed."""
    schema = _schema()
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    found: dict[int, dict[str, Any]] = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            size = model.Buffers(tensor.Buffer()).DataLength() if tensor.Buffer() else 0
            if size < max(min_bytes, 1) or tensor.Buffer() in found:
                continue
            quant = tensor.Quantization()
            found[tensor.Buffer()] = {"name": tensor.Name().decode(), "shape": tensor.ShapeAsNumpy().tolist(),
                                      "type": types.get(tensor.Type(), str(tensor.Type())), "bytes": size,
                                      "scales": quant.ScaleLength() if quant is not None else 0}
    return sorted(found.values(), key=lambda a: -a["bytes"])


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # pragma: no cover - where the LiteRT package cannot be installed
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def interpreter(content: bytes, threads: int = 1) -> Any:
    """A LiteRT interpreter of `content`, tensors allocated: the `ai-edge-litert` package's
    (TensorFlow's own `tf.lite.Interpreter` is scheduled for deletion), or TensorFlow's where
    the package cannot be installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover
        Interpreter = tf.lite.Interpreter
    it = Interpreter(model_content=content, num_threads=threads)
    it.allocate_tensors()
    return it


def check(content: bytes, model: LanguageModel, ids: Sequence[int], source: str, text: bool = True,
          progress: bool = False) -> Check:
    """Run `ids` through the file one token at a time (batch 1, the state carried, `</s>` first)
    and through the model, and compare every log-probability."""
    it = interpreter(content)
    step = it.get_signature_runner("step")
    state = it.get_signature_runner("zero_state")(batch_size=np.array(1, np.int32))
    h, c = state["h"], state["c"]
    model_state = model.zero_state(1)
    ids = np.asarray(ids, np.int32)
    context = np.concatenate([[EOS_ID], ids[:-1]]).astype(np.int32)
    worst, nll, model_nll = 0.0, 0.0, 0.0
    bar = progress_bar(total=len(ids), desc="check", unit="tok", disable=not progress, leave=False)
    for start in range(0, len(ids), CHECK_CHUNK):
        chunk, targets = context[start:start + CHECK_CHUNK], ids[start:start + CHECK_CHUNK]
        hidden, model_state = model(tf.constant(chunk[None]), training=False, initial_state=model_state,
                                    return_state=True)
        expected = tf.nn.log_softmax(model.logits(hidden[0])).numpy()  # (n, V)
        got = np.empty_like(expected)
        for t, token in enumerate(chunk):
            out = step(token=np.array([token], np.int32), h=h, c=c)
            h, c, got[t] = out["h"], out["c"], out["log_probs"][0]
        worst = max(worst, float(np.abs(got - expected).max()))
        rows = np.arange(len(targets))
        nll -= float(got[rows, targets].sum())
        model_nll -= float(expected[rows, targets].sum())
        bar.update(len(chunk))
    bar.close()
    n = max(len(ids), 1)
    return Check(len(ids), source, worst, math.exp(nll / n) if text else None,
                 math.exp(model_nll / n) if text else None)


def check_tokens(data_dir: Path, meta: DataMeta, vocab_size: int, count: int = CHECK_TOKENS
                 ) -> tuple[np.ndarray, str, bool]:
    """(ids, where they came from, whether they are text) for `check`: the first `count` tokens
    of the prepared validation split (else test, else train); where no split is left on disk,
    seeded random ids, which check the numbers but give no meaningful perplexity."""
    data = DataPaths(Path(data_dir))
    for split in ("valid", "test", "train"):
        if not meta.has_split(split):
            continue
        files = split_files(data, split, meta.splits[split].shard_bytes)
        if all(f.is_file() for f in files):
            ids = read_ids(files, count)
            return ids, f"the first {len(ids):,} tokens of the {split} split", True
    ids = np.random.default_rng(0).integers(0, vocab_size, count).astype(np.int32)
    return ids, f"{count} random ids (no prepared split in {data.root})", False


def export_litert(model: LanguageModel, out_dir: Path, tokenizer_path: Path | None, info: dict[str, Any],
                  quantize: str = "int8", top_k: int = 3, check_ids: Sequence[int] = (), check_source: str = "",
                  check_is_text: bool = True, progress: bool = False) -> LiteExport:
    """Convert, check against the model, and write `out_dir` (`paths.publish_dir`): FILE_NAME,
    the tokenizer beside it, and EXPORT_INFO saying what the file holds and what the check saw.

    A float32 file that differs from the model by more than FLOAT_TOLERANCE is an error (nothing
    is written): the two compute the same function. A quantized one reports its difference.
    """
    content = convert(model, quantize, top_k)
    ops = operators(content)
    if custom := [op for op in ops if op.startswith("CUSTOM:")]:  # pragma: no cover - builtins are enforced
        raise LmtrainError(f"the converted model needs custom ops ({', '.join(custom)}); a phone runtime lacks them")
    result = check(content, model, check_ids, check_source, check_is_text, progress) if len(check_ids) else None
    if (result is not None and quantize == "none" and model.precision == "float32"
            and not result.max_difference <= FLOAT_TOLERANCE):
        raise LmtrainError(f"the converted model's log-probabilities differ from the model's by "
                           f"{result.max_difference:.3g} (allowed {FLOAT_TOLERANCE:g}); this is a bug in lmtrain")
    parameters = parameter_count(model)
    signatures = {
        "step": {"inputs": {"token": "[B] int32", "h": f"[{model.num_layers}, B, {model.state_width}] float32",
                            "c": f"[{model.num_layers}, B, {model.hidden_dim}] float32"},
                 "outputs": {"log_probs": f"[B, {model.vocab_size}] float32", "h": "as h", "c": "as c",
                             **({"top_ids": f"[B, {top_k}] int32", "top_log_probs": f"[B, {top_k}] float32"}
                                if top_k else {})}},
        "zero_state": {"inputs": {"batch_size": "int32"}, "outputs": {"h": "state", "c": "state"}},
    }
    export = LiteExport(Path(out_dir), quantize, len(content), parameters, ops, result, signatures)
    details = {
        "format": "litert", "file": FILE_NAME, "quantize": quantize, "file_bytes": len(content),
        "parameters": parameters, "ops": ops, "signatures": signatures,
        "vocab_size": model.vocab_size, "num_layers": model.num_layers, "hidden_dim": model.hidden_dim,
        "state_width": model.state_width,
        "eos_id": EOS_ID, "newline_id": NL_ID, "unk_id": UNK_ID,
        "check": asdict(result) if result is not None else None, **info,
    }

    def fill(tmp: Path) -> None:
        (tmp / FILE_NAME).write_bytes(content)
        if tokenizer_path is not None:
            (tmp / TOKENIZER_NAME).write_bytes(Path(tokenizer_path).read_bytes())
        (tmp / EXPORT_INFO).write_text(json.dumps(details, indent=1))

    publish_dir(Path(out_dir), fill)
    return export
