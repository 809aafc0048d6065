"""SentencePiece training and loading.

SentencePiece works on lines and cannot emit a newline, but line breaks are part of the text we
model (verse, dialogue). So every line is encoded on its own and followed by the `<nl>` symbol,
and documents end with the end-of-sequence id `</s>`. Decoding splits on `<nl>` again, which
also avoids the stray space SentencePiece's word-boundary marker would put after each break.
Ids: 0 `<unk>`, 1 `</s>`, 2 `<nl>`, then the learned pieces; no padding or begin-of-sequence id.

At word level every whitespace word is one id, an unknown one `<unk>`: SentencePiece itself
merges a run of unknown pieces into one `<unk>` ("a <unk> <unk> said" became three ids on Penn
Treebank, where 4,010 training tokens vanished that way), so such lines are encoded word by word.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from lmtrain.config.schema import TokenizerConfig
from lmtrain.data.formats import document_lines
from lmtrain.errors import LmtrainError

UNK_ID, EOS_ID, NL_ID = 0, 1, 2
_NL_PIECE = "<nl>"


class Tokenizer:
    """A loaded SentencePiece model plus the newline/end-of-sequence convention above."""

    def __init__(self, model_path: Path) -> None:
        if not Path(model_path).is_file():
            raise LmtrainError(f"tokenizer model not found: {model_path}")
        self._sp = spm.SentencePieceProcessor(model_file=str(model_path))
        if self._sp.piece_to_id(_NL_PIECE) != NL_ID or self._sp.eos_id() != EOS_ID:
            raise LmtrainError(f"{model_path}: not a tokenizer written by lmtrain prepare")
        # The word model also learns a "▁<nl>" piece; it never occurs in encoded data, but an
        # undertrained model may still sample it, so it decodes as a line break too.
        self._breaks = {NL_ID} | {i for i in range(self.vocab_size) if self._sp.id_to_piece(i) == "\u2581" + _NL_PIECE}
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(self._sp.serialized_model_proto())
        self.word_level = proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.WORD

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode_lines(self, lines: list[str]) -> list[list[int]]:
        """Ids of each line followed by `<nl>` (one list per line; SentencePiece batches them)."""
        encoded = self._encode(lines, os.cpu_count() or 1)
        for ids in encoded:
            ids.append(NL_ID)
        return encoded

    def _encode(self, lines: list[str], threads: int) -> list[list[int]]:
        """SentencePiece's ids of each line; at word level one id per whitespace word, each
        unknown word its own `<unk>` (the lines where SentencePiece merged a run of them are
        encoded again word by word: a per-line check, no Python work per token)."""
        encoded = self._sp.encode(lines, num_threads=threads)
        if self.word_level:
            for i, line in enumerate(lines):
                words = line.split()
                if len(encoded[i]) != len(words):
                    encoded[i] = [piece[0] if piece else UNK_ID for piece in self._sp.encode(words)]
        return encoded

    def encode_stream(self, lines: list[str], threads: int | None = None, records: list[int] | None = None
                      ) -> np.ndarray:
        """The ids of `lines` as one int32 array, each line followed by `<nl>`: what prepare
        writes. With `records` (how many of the lines each record has, in order), each record's
        lines are followed by `</s>` as well. One batched SentencePiece call (on `threads`
        threads; default: every core), one flattening and one vectorised insertion of the
        `<nl>` (and `</s>`) ids: no Python work per token."""
        encoded = self._encode(lines, threads or os.cpu_count() or 1)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int32, count=int(lengths.sum()))
        ids = np.insert(flat, np.cumsum(lengths), np.int32(NL_ID))
        if records is None:
            return ids
        line_ends = np.concatenate([[0], np.cumsum(lengths + 1)])  # token offset after each line
        return np.insert(ids, line_ends[np.cumsum(records, dtype=np.int64)], np.int32(EOS_ID))

    def encode_text(self, text: str) -> list[int]:
        """Ids of a text given as one string; a trailing newline adds a final `<nl>`."""
        ids = [i for chunk in self.encode_lines(text.split("\n")) for i in chunk]
        return ids[:-1]  # split() yields one more line than there are newlines

    def encode_document(self, text: str) -> list[int]:
        """Ids of a text as `prepare` stores a document: each line then `<nl>`, then `</s>`."""
        return [i for chunk in self.encode_lines(document_lines(text)) for i in chunk] + [EOS_ID]

    def piece(self, token_id: int) -> str:
        """The text of one id ("<nl>", "</s>" and "<unk>" for the special ids)."""
        return self._sp.id_to_piece(int(token_id))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids; `<nl>` becomes a line break, `</s>` a blank line."""
        lines: list[list[int]] = [[]]
        for i in ids:
            if i in self._breaks:
                lines.append([])
            elif i == EOS_ID:
                lines.extend([[], []])
            else:
                lines[-1].append(int(i))
        return "\n".join(self._sp.decode(chunk) for chunk in lines)


def train_tokenizer(lines: Sequence[str], config: TokenizerConfig, path: Path,
                    word_counts: Mapping[str, int] | None = None) -> Tokenizer:
    """Train SentencePiece on the given lines (from the training split only) and load the result.

    `prepare` passes a sample it drew with `vocabsample.sample_lines`, which reads a large corpus
    without holding it. Whatever the caller passes, SentencePiece gets at most
    `tokenizer.max_sentences` non-blank lines, drawn here with a seeded generator: its own
    sampler (`input_sentence_size`) draws differently in every process whatever seed it is
    given, so the same corpus gave a different vocabulary on each prepare.

    With `tokenizer.vocab_size: null` (word level) the vocabulary is every word of the training
    split: `word_counts` (counted by prepare over the whole split, not a sample) is given to
    SentencePiece as a word/frequency table, with no normalisation of the text, so ids follow
    frequency and every whitespace word of the text is one token.
    """
    # Whatever else SentencePiece draws comes from its own generator: seed it as well.
    spm.set_random_generator_seed(0)
    # The model comes back in memory and is written here: SentencePiece's own file writer does
    # not report a failed write (a full disk left a truncated model behind).
    model = io.BytesIO()
    options: dict[str, Any]
    table = None
    if config.vocab_size is None:
        if not word_counts:
            raise LmtrainError("data.corpus: the training split holds no text")
        table = tempfile.NamedTemporaryFile("w", suffix=".tsv", encoding="utf-8", delete=False)
        with table:
            for word, count in sorted(word_counts.items(), key=lambda wc: (-wc[1], wc[0])):
                table.write(f"{word}\t{count}\n")
        longest = max(len(w) for w in word_counts)
        # + <unk>, </s>, <nl>, and the "▁<nl>" piece the word model always learns (see Tokenizer)
        options = dict(input=table.name, input_format="tsv", vocab_size=len(word_counts) + 4,
                       hard_vocab_limit=False, normalization_rule_name="identity",
                       max_sentencepiece_length=min(max(16, longest + 1), 512))
    else:
        sample = [line for line in lines if line.strip()]
        if len(sample) > config.max_sentences:
            keep = np.random.default_rng(0).choice(len(sample), size=config.max_sentences, replace=False)
            sample = [sample[i] for i in np.sort(keep)]
        options = dict(sentence_iterator=iter(sample), vocab_size=config.vocab_size,
                       input_sentence_size=0,  # all of `sample`: the sampling is done above
                       # A character vocabulary is as large as the alphabet, whatever was asked for.
                       hard_vocab_limit=config.model_type != "char")
    try:
        spm.SentencePieceTrainer.train(
            **options,
            model_writer=model,
            model_type=config.model_type,
            character_coverage=config.character_coverage,
            unk_id=UNK_ID,
            eos_id=EOS_ID,
            bos_id=-1,
            pad_id=-1,
            user_defined_symbols=[_NL_PIECE],
            num_threads=os.cpu_count() or 1,
            minloglevel=2,  # SentencePiece logs a page per run; errors still raise
        )
    except RuntimeError as exc:
        raise LmtrainError(_explain(str(exc), config)) from None
    finally:
        if table is not None:
            os.unlink(table.name)
    path.write_bytes(model.getvalue())
    return Tokenizer(path)


def _explain(message: str, config: TokenizerConfig) -> str:
    too_high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message)
    if too_high:
        return (
            f"tokenizer.vocab_size: {config.vocab_size} is too large for this corpus "
            f"(at most {too_high.group(2)} with model_type {config.model_type}); lower it or add text"
        )
    if "Vocabulary size is smaller than required_chars" in message or "vocab_size" in message.lower():
        return f"tokenizer.vocab_size: {config.vocab_size} does not fit this corpus: {message.strip().splitlines()[-1]}"
    if "No sentence" in message or "empty" in message.lower():
        return "data.corpus: the training split holds no text"
    return f"SentencePiece failed: {message.strip().splitlines()[-1]}"
