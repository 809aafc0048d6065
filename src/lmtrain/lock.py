"""One writer per directory: `fit` holds its run directory and `prepare` its data directory with
an exclusive OS file lock for as long as it works, so a second writer (a second terminal, a
scheduler that restarts a job whose first copy still runs) stops at once and changes nothing.

The lock is `flock` on a lock file (`<run_dir>/.lock`; `.<name>.lock` beside a data directory,
which `prepare` replaces whole). The kernel drops it when the process ends however it ends, so a
killed run never leaves a stale lock; the file itself stays, and names the last holder (pid,
host, command, time) for the message a second writer gets. Readers (`eval`, `generate`,
`export`, `lmtrain.load`) take no lock.

Shared storage: on NFS, Linux carries `flock` over as a byte-range lock the server coordinates
between machines (NFSv4, or v3 with its lock daemon); a file system that cannot lock at all
(ENOLCK, EOPNOTSUPP) gets one warning line and no lock, as before locks existed.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path
from typing import Callable

from lmtrain.errors import BusyError

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock is a no-op there
    fcntl = None  # type: ignore[assignment]


class DirectoryLock:
    """An exclusive lock on `directory` through `lock_file`, held inside a `with` block.

    Args:
        directory: what the lock protects (named in the message).
        lock_file: the file locked (created if missing; never deleted).
        command: the verb holding it (`fit`, `prepare`), recorded for the message.
        key: the config key that named the directory (`train.run_dir`, `data.dir`).
        warn: where the one warning goes where the file system cannot lock.
    """

    def __init__(self, directory: Path, lock_file: Path, command: str, key: str,
                 warn: Callable[[str], None] = print) -> None:
        self.directory, self.lock_file, self.command, self.key, self.warn = directory, lock_file, command, key, warn
        self._fd: int | None = None

    def __enter__(self) -> "DirectoryLock":
        if fcntl is None:
            return self
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BusyError(f"{self.key}: {self.directory} is in use by another writer ({holder}); wait for it "
                                f"to end, or stop it, then run this again") from None
            self.warn(f"warning: {self.lock_file}: this file system cannot lock ({os.strerror(exc.errno)}); "
                      f"{self.command} runs without the lock that keeps a second writer out")
            return self
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        os.pwrite(fd, f"lmtrain {self.command}, pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n"
                  .encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def run_dir_lock(run_dir: Path, warn: Callable[[str], None] = print) -> DirectoryLock:
    """`fit`'s lock on a run directory (the lock file lives in it)."""
    return DirectoryLock(run_dir, run_dir / ".lock", "fit", "train.run_dir", warn)


def data_dir_lock(data_dir: Path, warn: Callable[[str], None] = print) -> DirectoryLock:
    """`prepare`'s lock on a data directory (beside it: `prepare` replaces the directory whole)."""
    return DirectoryLock(data_dir, data_dir.with_name(f".{data_dir.name}.lock"), "prepare", "data.dir", warn)


def _read_holder(fd: int) -> str:
    text = os.pread(fd, 512, 0).decode("utf-8", errors="replace").strip()
    return text or "it wrote no name yet"
