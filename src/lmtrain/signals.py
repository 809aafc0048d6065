"""Stop signals: SIGINT and SIGTERM turned into a request that a long loop honours at a safe point."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignals:
    """While active, SIGINT and SIGTERM ask the loop to stop after the current step.

    The handler only records the signal: the loop finishes the step (fit: writes a checkpoint;
    `eval --per-line`: writes the lines scored) and raises `Interrupted`. A second signal stops
    at once (KeyboardInterrupt); fit's atomic checkpoint writes make even that safe. Handlers
    can only be set from the main thread; elsewhere (a library caller's worker thread) signals
    keep their usual meaning.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
