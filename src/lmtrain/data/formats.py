"""What a corpus file holds and how its bytes become text: compression and record formats.

A file's compression is told by its first bytes, not its name (a `.txt` that is really gzip
still reads; a `.gz` that is plain text too): gzip, bzip2, xz and zstd are decompressed as a
stream. Its format is told by its name, after any compression suffix: `.jsonl` / `.json` /
`.ndjson` are JSON Lines (one record per line, its text in one field), `.parquet` is Parquet
(one record per row; the magic bytes `PAR1` also say so), anything else is plain text.

Records are documents: each one's text is split into lines the way a plain file is, and ends
with `</s>`. A record that is not what it should be (a line that is not JSON, no text field, a
field that is not a string) is a `RecordError` naming the file, the line and the field: never a
silent skip. This module imports neither TensorFlow nor pyarrow until a Parquet file is read,
so the encoding workers start fast.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path
from typing import BinaryIO, Iterator, Literal

from lmtrain.errors import InputError

Kind = Literal["text", "markdown", "jsonl", "parquet"]

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIX = ".parquet"
# What a directory given as data.corpus is searched for (a compressed file by its last suffix).
CORPUS_SUFFIXES = (".txt", ".md", *JSONL_SUFFIXES, PARQUET_SUFFIX, *COMPRESSION_SUFFIXES)

_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
# Containers and compressions this module does not read, named in the error instead of "binary".
_UNREAD = {b"PK\x03\x04": "a zip archive", b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
           b"\x04\x22\x4d\x18": "lz4-compressed", b"Rar!\x1a\x07": "a RAR archive",
           b"\x89HDF\r\n\x1a\n": "an HDF5 file", b"\x93NUMPY": "a NumPy array"}
_PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 8192  # how much decompressed text is checked for NUL bytes (the mark of binary data)


def compression(path: Path) -> str | None:
    """The compression of a file by its magic bytes (gzip, bzip2, xz, zstd), or None."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    return next((name for magic, name in _COMPRESSED.items() if head.startswith(magic)), None)


def kind_of(path: Path) -> Kind:
    """The format of a corpus file, by its name once a compression suffix is dropped."""
    name = path.name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.endswith(PARQUET_SUFFIX):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    try:
        with open(path, "rb") as fh:
            if fh.read(4) == _PARQUET_MAGIC:
                return "parquet"
    except OSError:
        pass  # reported when the file is read
    return "text"


def open_stream(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when its magic bytes say it is compressed. Every stream
    supports `seek` forwards (a compressed one by reading on), which is how a part is read."""
    method = compression(path)
    if method == "gzip":
        return gzip.open(path, "rb")
    if method == "bzip2":
        return bz2.open(path, "rb")
    if method == "xz":
        return lzma.open(path, "rb")
    if method == "zstd":
        import zstandard

        # read_across_frames: files written by parallel compressors hold many frames.
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True, closefd=True)
    return open(path, "rb")


def stream_length(path: Path) -> int:
    """Bytes of the file once decompressed (one streaming pass for a compressed file)."""
    if compression(path) is None:
        return path.stat().st_size
    total = 0
    with open_stream(path) as fh:
        while chunk := fh.read(1 << 20):
            total += len(chunk)
    return total


def read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged or truncated (compressed) file raises."""
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, lzma.LZMAError)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    return errors


def check_not_binary(path: Path, head: bytes, key: str) -> None:
    """Refuse data that is not text (`head`: its first decompressed bytes), naming what it is
    where the file's first bytes tell (an archive is refused by its magic alone)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
    what = next((name for magic, name in _UNREAD.items() if raw.startswith(magic)), None)
    if what is not None:
        raise InputError(f"{key}: {path} is {what}, which is not read; unpack it, or compress the text as "
                         f".gz, .bz2, .xz or .zst (gzip, bzip2, xz and zstd are read)")
    if b"\0" not in head:
        return
    method = compression(path)
    if method is not None:
        cause = (f"is {method}-compressed, but what it holds is not text (NUL bytes in its first "
                 f"{SNIFF_BYTES // 1024} KiB once decompressed); remove it from the corpus")
    else:
        cause = (f"is not text: NUL bytes in its first {SNIFF_BYTES // 1024} KiB, and no compression this "
                 f"reads (gzip, bzip2, xz, zstd); remove it from the corpus")
    raise InputError(f"{key}: {path} {cause}")


class RecordError(InputError):
    """A record of a JSON Lines or Parquet file that is not what it should be. `unit` is its
    line (row) within the block it came from; `Document.record_error` says where in the file."""

    def __init__(self, unit: int, detail: str) -> None:
        super().__init__(unit, detail)
        self.unit, self.detail = unit, detail

    def __str__(self) -> str:
        return f"record {self.unit + 1} of its block: {self.detail}"


def json_records(lines: list[str], field: str, id_field: str | None = None
                 ) -> list[tuple[str, object] | None]:
    """(text, id) of each JSON Lines record, the text from `field` and the id from `id_field`
    (None where not asked for); None for a blank line, which holds no record."""
    records: list[tuple[str, object] | None] = []
    for i, line in enumerate(lines):
        if not line.strip():
            records.append(None)
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise RecordError(i, f"not JSON ({exc.args[0].split(':')[0]})") from None
        if not isinstance(record, dict):
            raise RecordError(i, f"a JSON {_json_type(record)}, not an object with a {field!r} field")
        for key, setting in ((field, "data.text_field"), (id_field, "--id-field")):
            if key is not None and key not in record:
                fields = ", ".join(map(repr, list(record)[:8])) or "none"
                raise RecordError(i, f"no {key!r} field (its fields: {fields}); set {setting}")
        text = record[field]
        if not isinstance(text, str):
            raise RecordError(i, f"the {field!r} field is a JSON {_json_type(text)}, expected a string")
        records.append((text, None if id_field is None else record[id_field]))
    return records


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file, from its footer."""
    return _parquet_file(path).metadata.num_rows


def parquet_blocks(path: Path, field: str, start: int, end: int | None, block_bytes: int
                   ) -> Iterator[tuple[int, list[str]]]:
    """(first row, texts) for rows [start, end) of the `field` column, in blocks of about
    `block_bytes` of text. Row groups are read one at a time (only the groups that hold those
    rows, only that column), so memory holds one group, whatever the file's size."""
    pq_file = _parquet_file(path)
    schema = pq_file.schema_arrow
    if field not in schema.names:
        raise InputError(f"data.text_field: {path} has no column {field!r} (its columns: "
                         f"{', '.join(map(repr, schema.names[:8]))}); set data.text_field")
    import pyarrow as pa

    column_type = schema.field(field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise InputError(f"data.text_field: {path}: the column {field!r} holds {column_type}, expected strings")
    meta = pq_file.metadata
    end = meta.num_rows if end is None else end
    row, texts, size, first = 0, [], 0, start
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        if row + rows <= start or row >= end:
            row += rows
            continue
        for batch in pq_file.iter_batches(row_groups=[group], columns=[field], batch_size=8192):
            values = batch.column(0)
            lo, hi = max(start - row, 0), min(end - row, len(values))
            row_of_lo = row + lo
            row += len(values)
            if lo >= hi:
                continue
            part = values.slice(lo, hi - lo)
            if part.null_count:
                bad = row_of_lo + next(i for i, v in enumerate(part.is_valid().to_pylist()) if not v)
                raise InputError(f"data.corpus: {path}, row {bad + 1}: the {field!r} column is null, "
                                 f"expected a string")
            for text in part.to_pylist():
                texts.append(text)
                size += len(text)
                if size >= block_bytes:
                    yield first, texts
                    first += len(texts)
                    texts, size = [], 0
    if texts:
        yield first, texts


def _parquet_file(path: Path):  # -> pyarrow.parquet.ParquetFile
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise InputError(f"data.corpus: reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a damaged footer
        raise InputError(f"data.corpus: {path} is not a readable Parquet file ({str(exc).splitlines()[0]})") from None


def document_lines(text: str) -> list[str]:
    """The lines of a text as reading a corpus file gives them (line ends dropped; a final line
    end does not start another line): how a record, `eval --text` and the API read text."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines
