"""Writing TFRecord shards of token ids (prepare); `records` reads them with tf.data.

A split is one token stream, cut into records of at most `RECORD_TOKENS` ids stored as raw
little-endian int32, and into shards of about `data.shard_tokens` ids. The TFRecord framing is
written here (length, masked CRC32C of the length, data, masked CRC32C of the data, as
TensorFlow's own writer does; a test checks the bytes are the same) with google-crc32c, so
`prepare` and its encoding workers never import TensorFlow: that saves seconds of start-up and
about half a gigabyte of memory per process.
"""

from __future__ import annotations

import struct
from array import array
from pathlib import Path
from typing import IO, Sequence

import google_crc32c
import numpy as np

from lmtrain.paths import DataPaths

RECORD_TOKENS = 1 << 16
_RECORD_OVERHEAD = 16  # TFRecord framing: 8-byte length, 4-byte length CRC, 4-byte data CRC
_MASK_DELTA = 0xA282EAD8


def frame(data: bytes) -> bytes:
    """One TFRecord: the data with its length and both checksums."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", _masked_crc(length)), data, struct.pack("<I", _masked_crc(data))))


def _masked_crc(data: bytes) -> int:
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant (mod 2^32)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class ShardWriter:
    """Append token ids to a split; records and shards are cut as the stream grows."""

    def __init__(self, paths: DataPaths, split: str, shard_tokens: int) -> None:
        self._paths, self._split, self._shard_tokens = paths, split, shard_tokens
        self._buffer = array("i")
        self._writer: IO[bytes] | None = None
        self._path: Path | None = None
        self._in_shard = 0
        self.shard_bytes: list[int] = []  # size of each shard written so far, for readers to check
        self.tokens = 0

    def write(self, ids: Sequence[int] | np.ndarray) -> None:
        """Append ids. Whole records are written straight from the array (slices, no copies of
        what follows); only a record's worth of ids is ever held back."""
        ids = np.asarray(ids, dtype=np.int32)
        self.tokens += len(ids)
        if self._buffer:  # complete the record already begun
            need = RECORD_TOKENS - len(self._buffer)
            self._buffer.frombytes(ids[:need].tobytes())
            ids = ids[need:]
            if len(self._buffer) < RECORD_TOKENS:
                return
            self._record(self._buffer.tobytes(), RECORD_TOKENS)
            self._buffer = array("i")
        whole = len(ids) - len(ids) % RECORD_TOKENS
        for start in range(0, whole, RECORD_TOKENS):
            self._record(ids[start:start + RECORD_TOKENS].tobytes(), RECORD_TOKENS)
        self._buffer.frombytes(ids[whole:].tobytes())

    def close(self) -> list[int]:
        """Flush what is left; return the size in bytes of each shard written."""
        if self._buffer:
            self._record(self._buffer.tobytes(), len(self._buffer))
            self._buffer = array("i")
        self._close_shard()
        return self.shard_bytes

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._in_shard = 0

    def _record(self, data: bytes, n: int) -> None:
        """Write one record of `n` ids (their int32 bytes), cutting shards as they fill."""
        if self._writer is None:
            # Unbuffered: records are large, and a failed write (a full disk) is seen at once,
            # named with its file.
            self._path = self._paths.shard(self._split, len(self.shard_bytes))
            self._writer = open(self._path, "wb", buffering=0)
            self.shard_bytes.append(0)
        try:
            self._writer.write(frame(data))
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self._path)) from None
        self._in_shard += n
        self.shard_bytes[-1] += _RECORD_OVERHEAD + 4 * n
        if self._in_shard >= self._shard_tokens:
            self._close_shard()
