"""Progress reports: a tqdm bar on a terminal, a plain log line every few seconds elsewhere.

Under `nohup`, CI or `> fit.log 2>&1` a bar's carriage-return redraws pile up in the file (one
per update), so when stderr is not a terminal the same calls print one complete line at most
every `LOG_SECONDS` (done/total, share, rate, elapsed, time left, and the bar's postfix such as
the loss), and one at the end, the way other trainers log.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping, TextIO

from tqdm import tqdm

LOG_SECONDS = 15.0  # at most one progress line this often when stderr is not a terminal


def progress_bar(total: float | None = None, desc: str = "", unit: str = "it", initial: float = 0,
             disable: bool = False, unit_scale: bool = False, leave: bool = True) -> Any:
    """A progress bar with tqdm's interface (`update`, `set_postfix`, `write`, `close`, `with`):
    tqdm on a terminal, `LogLines` otherwise."""
    if _is_terminal(sys.stderr):
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, unit_scale=unit_scale,
                    leave=leave, dynamic_ncols=True)
    return LogLines(total=total, desc=desc, unit=unit, initial=initial, disable=disable, unit_scale=unit_scale,
                    leave=leave)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


class LogLines:
    """tqdm's calls, written as whole lines: at most one every `every` seconds while it runs,
    and a last one when it closes (for a bar that is `leave`-n, or that printed before)."""

    def __init__(self, total: float | None = None, desc: str = "", unit: str = "it", initial: float = 0,
                 disable: bool = False, unit_scale: bool = False, leave: bool = True,
                 every: float = LOG_SECONDS, file: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.disable, self._scale, self._leave, self._every = disable, unit_scale, leave, every
        self._file = file
        self._postfix = ""
        self._start = self._last = time.monotonic()
        self._initial = initial
        self._printed_at: float | None = None  # n at the last line printed
        self._closed = False

    def __enter__(self) -> "LogLines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self._last >= self._every:
            self._last = now
            self._print()

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def write(self, s: str) -> None:
        print(s, file=self._stream(), flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and (self._leave or self._printed_at is not None) and self._printed_at != self.n:
            self._print()

    def line(self) -> str:
        """The progress as one line of text."""
        elapsed = time.monotonic() - self._start
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        done = self._fmt(self.n)
        parts = [f"{self.desc}: {done}" + (f"/{self._fmt(self.total)}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({self.n / self.total:.0%})"
        parts.append(f"{self._fmt(rate)} {self.unit}/s")
        parts.append(f"elapsed {tqdm.format_interval(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {tqdm.format_interval((self.total - self.n) / rate)}")
        if self._postfix:
            parts.append(self._postfix)
        return ", ".join(parts)

    def _fmt(self, x: float) -> str:
        if self._scale:
            return tqdm.format_sizeof(x)
        return f"{x:,.0f}" if x >= 10 or float(x).is_integer() else f"{x:.2f}"

    def _print(self) -> None:
        self._printed_at = self.n
        print(self.line(), file=self._stream(), flush=True)

    def _stream(self) -> TextIO:
        return self._file if self._file is not None else sys.stderr
