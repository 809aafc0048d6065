"""Reading the tensors of a TensorFlow checkpoint a block of rows at a time, the checksum checked.

Why not TensorFlow's own reader: `RestoreV2` with a slice reads (and holds) the whole stored
tensor to return any part of it, so reading a [793k, 512] matrix in 48 blocks read 1.6 GB 48
times. A checkpoint is an index, a LevelDB-format table whose values are `BundleEntryProto`s
(which data file holds a tensor, at which offset, its size and its masked CRC32C), and data
files of raw little-endian bytes: one `pread` reads a block of rows, and the CRC of the whole
tensor is computed as the blocks stream past, so a damaged file is still caught.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import google_crc32c
import numpy as np

from lmtrain.errors import LmtrainError, first_line

_MAGIC = 0xDB4775248B80FB57  # the LevelDB table footer's magic number
_FOOTER = 48
_MASK_DELTA = 0xA282EAD8
_CHUNK = 64 << 20  # bytes read at once when checking a whole checkpoint
# TensorFlow's DataType enum -> numpy, for the dtypes lmtrain stores.
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_, 19: np.float16}


class DamagedCheckpoint(LmtrainError):
    """A tensor's bytes are not what was written (a checksum that does not match, a file cut short)."""


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor of a checkpoint lies: its data file, byte range, shape and checksum."""

    name: str
    path: Path
    offset: int
    size: int
    shape: tuple[int, ...]
    dtype: np.dtype
    masked_crc: int

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows [n, ...]) of the tensor, `rows` at a time, read one block at a time;
        the checksum of the whole tensor is checked after the last block (a LmtrainError if
        the bytes are not what was written)."""
        shape = self.shape or (1,)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        crc = 0
        with open(self.path, "rb") as f:
            for lo in range(0, shape[0], rows):
                n = min(rows, shape[0] - lo)
                data = os.pread(f.fileno(), n * row_bytes, self.offset + lo * row_bytes)
                if len(data) != n * row_bytes:
                    raise DamagedCheckpoint(f"checkpoint {self.path}: {self.name} is cut short (the file is damaged)")
                crc = google_crc32c.extend(crc, data)
                yield lo, np.frombuffer(data, self.dtype).reshape((n, *shape[1:]))
        if _mask(crc) != self.masked_crc:
            raise DamagedCheckpoint(f"checkpoint {self.path}: {self.name} is damaged (its checksum does not match)")

    def read(self) -> np.ndarray:
        """The whole tensor, its checksum checked."""
        (_, value), = self.blocks(self.shape[0] if self.shape else 1)
        return value.reshape(self.shape)


def stored_tensors(prefix: str) -> dict[str, StoredTensor]:
    """Every tensor of checkpoint `prefix` (as `tf.train.Checkpoint.write` names it) by key, for
    the dtypes lmtrain stores; an LmtrainError names a file that is not such an index."""
    from tensorflow.core.protobuf import tensor_bundle_pb2  # the message types only

    index = Path(f"{prefix}.index")
    try:
        raw = index.read_bytes()
        entries = dict(_table_entries(raw))
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(entries.pop(b""))
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise LmtrainError(f"checkpoint {prefix}: its index {index} is unreadable ({exc})") from None
    if header.endianness != tensor_bundle_pb2.BundleHeaderProto.LITTLE:
        raise LmtrainError(f"checkpoint {prefix}: written big-endian, which this reader does not take")
    tensors = {}
    for key, value in entries.items():
        entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
        if entry.dtype not in _DTYPES or entry.slices:
            continue
        data = Path(f"{prefix}.data-{entry.shard_id:05d}-of-{header.num_shards:05d}")
        shape = tuple(int(d.size) for d in entry.shape.dim)
        tensors[key.decode()] = StoredTensor(key.decode(), data, entry.offset, entry.size, shape,
                                             np.dtype(_DTYPES[entry.dtype]), entry.crc32c)
    return tensors


def damage(prefix: str) -> str | None:
    """What is wrong with checkpoint `prefix`'s files, in words, or None where every tensor's
    bytes are there and match their checksum. TensorFlow's restore would catch the same, but
    with a C++ log line and an error that reads like a checkpoint of another config.

    Numeric tensors are checked here, a large read at a time. Strings and variants (the object
    graph, the data iterator's state) are checksummed by their own scheme: TensorFlow reads
    them, its log lines held back (and written out where they say nothing of damage)."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    index = Path(f"{prefix}.index")
    try:
        entries = dict(_table_entries(index.read_bytes()))
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(entries.pop(b""))
        parsed = {key.decode(): tensor_bundle_pb2.BundleEntryProto.FromString(value) for key, value in entries.items()}
    except (OSError, ValueError, KeyError, IndexError, struct.error) as exc:
        return f"its index {index.name} is unreadable ({exc})"
    others = []
    for name, entry in parsed.items():
        if entry.dtype not in _DTYPES:
            others.append((name, entry.dtype))
            continue
        data = Path(f"{prefix}.data-{entry.shard_id:05d}-of-{header.num_shards:05d}")
        if why := _raw_damage(data, entry.offset, entry.size, entry.crc32c):
            return f"{name}: {why}"
    return _read_damage(prefix, others)


def _raw_damage(data: Path, offset: int, size: int, masked_crc: int) -> str | None:
    crc, done = 0, 0
    try:
        with open(data, "rb") as f:
            while done < size:
                chunk = os.pread(f.fileno(), min(_CHUNK, size - done), offset + done)
                if not chunk:
                    return f"{data.name} is cut short"
                crc, done = google_crc32c.extend(crc, chunk), done + len(chunk)
    except OSError as exc:
        return f"{data.name} is unreadable ({os.strerror(exc.errno or 0)})"
    return None if _mask(crc) == masked_crc else "its bytes do not match their checksum"


def _read_damage(prefix: str, tensors: list[tuple[str, int]]) -> str | None:
    """Read the non-numeric tensors with TensorFlow (which checks them), its stderr held."""
    import tensorflow as tf

    saved, held = os.dup(2), tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    why = None
    try:
        for name, dtype in tensors:
            try:
                tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=[name], shape_and_slices=[""],
                                     dtypes=[tf.dtypes.as_dtype(dtype)])
            except tf.errors.OpError as exc:  # "{{function_node ...}} The checksum after Variant 7 ..."
                why = f"{name}: {first_line(exc, 400).rpartition('}} ')[2][:120]}"
                break
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        text = held.read().decode("utf-8", errors="replace")
        held.close()
    if text and why is None:
        sys.stderr.write(text)
    return why


def _mask(crc: int) -> int:
    """LevelDB's masked CRC, as TensorFlow stores it."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _table_entries(raw: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) entries of a LevelDB-format table: the footer names the index block,
    whose entries name the data blocks."""
    footer = raw[-_FOOTER:]
    if struct.unpack("<Q", footer[-8:])[0] != _MAGIC:
        raise ValueError("not a checkpoint index (no table footer)")
    _, pos = _varint(footer, 0)  # the metaindex block's offset and size: not needed
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    for _, handle in _block_entries(_block(raw, index_offset, index_size)):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        yield from _block_entries(_block(raw, offset, size))


def _block(raw: bytes, offset: int, size: int) -> bytes:
    if raw[offset + size] != 0:  # the trailer's compression type: TensorFlow writes none
        raise ValueError("a compressed table block")
    return raw[offset:offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """A block's entries: each key shares a prefix with the one before; the restart points at
    the end (uint32s, then their count) mark where the entries stop."""
    restarts = struct.unpack("<I", block[-4:])[0]
    end, pos, key = len(block) - 4 * (restarts + 1), 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + length]
        pos += length


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
