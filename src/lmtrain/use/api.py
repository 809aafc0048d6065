"""The Python API: a trained run as an object to score text, generate and export.

    import lmtrain
    lm = lmtrain.load("runs/demo")
    lm.perplexity("To be, or not to be")
    for t in lm.score("To be"): print(t.token, t.log_prob)
    print(lm.generate("ROMEO", max_tokens=50, top_p=0.9, seed=1))

The CLI's `eval --text`, `generate` and `export` call these same methods, so the numbers match.
Text is always read as one document, the way `prepare` stores a corpus file: each line followed
by a newline token, then `</s>`; the first token is predicted from `</s>`, the start of a
document, and the LSTM state is carried through the whole text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtrain.errors import InputError
from lmtrain.paths import RunPaths, check_export_target
from lmtrain.scoring import score_ids
from lmtrain.use.evaluate import EvalResult, evaluate_text
from lmtrain.use.export import export_model
from lmtrain.use.generate import Generation, SamplingOptions, generate_text
from lmtrain.use.load import TrainedRun, load_run


@dataclass(frozen=True)
class TokenScore:
    token: str  # the piece as text; "<nl>" is a line break, "</s>" the end of the document
    id: int
    log_prob: float  # natural log of P(token | everything before it)


class TrainedModel:
    """A model loaded from a run directory, with the tokenizer it was trained with."""

    def __init__(self, run: TrainedRun, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.config = run.config
        self.step = run.step  # training step of the checkpoint
        self.tokenizer = run.tokenizer
        self.model = run.model  # the Keras model (lmtrain.model.LanguageModel)
        self.meta = run.meta  # the prepared data's meta.json, as the run saw it

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    def score(self, text: str) -> list[TokenScore]:
        """Every token of `text` (read as one document, `</s>` last) with its log-probability."""
        ids = self.tokenizer.encode_document(text)
        log_probs = score_ids(self.model, ids)
        return [TokenScore(self.tokenizer.piece(i), i, float(lp)) for i, lp in zip(ids, log_probs)]

    def perplexity(self, text: str) -> float:
        """exp of the mean negative log-likelihood per token of `text` (as in `score`)."""
        return self.evaluate(text).perplexity

    def evaluate(self, text: str) -> EvalResult:
        """Perplexity, loss, bits per byte and word perplexity of `text`, as `lmtrain eval` gives
        them for a split (`lmtrain eval --text`)."""
        return evaluate_text(self.model, self.tokenizer, text, self.step)

    def generate(self, prompt: str = "", max_tokens: int = 200, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, ignore_eos: bool = False, num_samples: int | None = None
                 ) -> Generation | list[Generation]:
        """Continue `prompt`; `str()` of the result is the prompt and continuation as text.

        Returns one `Generation`, or with `num_samples=N` a list of N of them, decoded together
        as one batch (about as fast per call as one stream on a CPU). Incremental decoding in
        one compiled function: one LSTM step per new token with the state carried, so the cost
        grows linearly with `max_tokens`. Stops at the end of a document unless `ignore_eos`.
        The same seed gives the same text.
        """
        options = SamplingOptions(max_tokens, temperature, top_k, top_p, seed, ignore_eos)
        if num_samples is not None and not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be a whole number of samples, at least 1 (or None for one "
                             f"Generation); got {num_samples!r}")
        out = generate_text(self.model, self.tokenizer, prompt, options, num_samples or 1)
        return out if num_samples is not None else out[0]

    def export(self, out_dir: str | Path | None = None, format: str = "savedmodel", quantize: str | None = None,
               top_k: int = 3) -> Path:
        """Write the model for serving; returns the directory written.

        `format="savedmodel"` (default `<run_dir>/export`): a SavedModel for TensorFlow
        (`lmtrain.use.export`). `format="litert"` (default `<run_dir>/litert`): a LiteRT file for a
        phone (`export_litert`, which also returns what its check measured).
        """
        if format == "litert":  # export_litert checks its options itself
            return self.export_litert(out_dir, quantize or "int8", top_k).path
        check_export_options(format, quantize)
        out = check_export_target(Path(out_dir or self.run_dir / "export"))
        return export_model(self.model, out, RunPaths(self.run_dir).tokenizer, self._export_info())

    def export_litert(self, out_dir: str | Path | None = None, quantize: str = "int8", top_k: int = 3,
                      progress: bool = False) -> Any:
        """Write a LiteRT (TFLite) file for a phone to `out_dir` (default `<run_dir>/litert`) and
        return a `lmtrain.use.litert.LiteExport`: its size, operators and check.

        The file's one-token `step` also gives the `top_k` most likely next ids; its weights are
        stored as `quantize` = "none" | "float16" | "int8". Before anything is written it is run
        through the LiteRT interpreter against this model on the first tokens of the validation
        split (`lmtrain.use.litert`).
        """
        from lmtrain.use import litert  # the converter is loaded only for this format

        check_export_options("litert", quantize)
        out = check_export_target(Path(out_dir or self.run_dir / "litert"))
        ids, source, is_text = litert.check_tokens(Path(self.config.data.dir), self.meta, self.vocab_size)
        return litert.export_litert(self.model, out, RunPaths(self.run_dir).tokenizer, self._export_info(), quantize,
                                    top_k, ids, source, is_text, progress)

    def _export_info(self) -> dict[str, Any]:
        return {"step": self.step, "config": self.config.to_dict(),
                "text": "each line then <nl> (id 2); a document ends with </s> (id 1)"}

    def __repr__(self) -> str:
        m = self.config.model
        return (f"TrainedModel({str(self.run_dir)!r}, step={self.step}, vocab={self.vocab_size}, "
                f"layers={m.num_layers}x{m.hidden_dim}{f'->{m.proj_size}' if m.proj_size else ''})")


EXPORT_FORMATS = ("savedmodel", "litert")


def check_export_options(format: str, quantize: str | None) -> None:
    """Raise `InputError` for an export format or quantization that does not exist, or a
    quantization asked of a format that has none (before any model is loaded)."""
    from lmtrain.use.litert import QUANTIZE

    if format not in EXPORT_FORMATS:
        raise InputError(f"--format {format}: must be one of {', '.join(EXPORT_FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise InputError(f"--quantize {quantize}: must be one of {', '.join(QUANTIZE)}")
    if format != "litert" and quantize not in (None, "none"):
        raise InputError(f"--quantize {quantize}: only --format litert is quantized")


def load(run_dir: str | Path) -> TrainedModel:
    """Load the latest checkpoint of a run directory written by `lmtrain fit`."""
    path = Path(run_dir)
    return TrainedModel(load_run(path), path)
