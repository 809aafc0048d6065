"""Importing TensorFlow without its start-up chatter on machines that have no GPU.

On a CPU-only machine TensorFlow 2.21 prints, before anything else, that it could not find CUDA
drivers, that `cuInit` failed, that oneDNN is on and which CPU instructions it was not built
for. These lines come from C++ before its logging is set up, so `TF_CPP_MIN_LOG_LEVEL` does not
silence them. `import_tensorflow` therefore imports TensorFlow (and lets it look for devices,
which is when `cuInit` runs) with the process's stderr captured at the file-descriptor level,
then writes back every captured line except those known start-up notices: a real error still
shows. Where a GPU is present nothing is filtered, since the CUDA lines then say something.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from types import ModuleType

# TensorFlow's start-up notices on a machine without a GPU (all of them, and nothing else).
_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
)


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, quietly on a machine without a GPU (see the module docstring)."""
    if "tensorflow" in sys.modules or _may_have_gpu():
        import tensorflow

        return tensorflow
    with _stderr_filtered():
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")  # the device probe: where cuInit runs
    return tensorflow


def without_notices(text: str) -> str:
    """`text` less TensorFlow's CPU-machine start-up notices, line by line."""
    return "".join(line for line in text.splitlines(keepends=True) if not _NOTICES.search(line))


def _may_have_gpu() -> bool:
    """An NVIDIA device node or driver is there (and CUDA_VISIBLE_DEVICES does not hide it)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia"))


class _stderr_filtered:
    """Capture file descriptor 2 (C++ and Python alike) in a temporary file; on exit, restore
    it and write back what was captured, less the start-up notices."""

    def __enter__(self) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        kept = without_notices(self._file.read().decode("utf-8", errors="replace"))
        self._file.close()
        if kept:
            sys.stderr.write(kept)
            sys.stderr.flush()
