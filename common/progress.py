"""Progress on long work: items done, items/s and ETA. A tqdm bar for a person at a terminal; periodic plain log
lines when stderr is not a terminal (containers, CI logs), so a half-hour evaluation never runs in silence.

One class for every long stage (prepare, convert, infer + post-process, metric, curation, training on rank 0).
$ZOO_PROGRESS=0 silences it; $ZOO_PROGRESS_EVERY sets the plain-line period in seconds (default 30).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _every_s(default: float) -> float:
    try:
        return float(os.environ.get("ZOO_PROGRESS_EVERY", default))
    except ValueError:
        return default


class Progress:
    """`update(n, **postfix)` after each item or batch; `close()` at the end (also a context manager)."""

    def __init__(self, total: int, initial: int = 0, *, desc: str, unit: str = "item", enabled: bool = True,
                 every_s: float = 30.0):
        self.total, self.done, self.desc, self.unit = total, initial, desc, unit
        # One voice per job: only rank 0 of a torchrun job reports (the others would interleave their lines).
        self.enabled = enabled and os.environ.get("ZOO_PROGRESS", "1") != "0" and os.environ.get("RANK", "0") == "0"
        self.every_s = _every_s(every_s)
        self._t0 = self._last = time.monotonic()
        self._start = initial
        self._bar = None
        self._postfix: dict[str, float] = {}
        if self.enabled and sys.stderr is not None and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix: float) -> None:
        self.done += n
        self._postfix.update(postfix)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in self._postfix.items()}, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s or (self.done >= self.total and now - self._t0 >= self.every_s):
            self._last = now
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self._t0
        rate = (self.done - self._start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        extra = " ".join(f"{k}={v:.4g}" for k, v in self._postfix.items())
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "?"
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}s ({100 * self.done / max(1, self.total):.1f} %), "
                f"{rate:.3g} {self.unit}/s, ETA {eta_s} {extra}").rstrip()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], total: int, *, desc: str, unit: str = "item") -> Iterator[T]:
    """Iterate `items`, counting one per item."""
    with Progress(total, desc=desc, unit=unit) as bar:
        for item in items:
            yield item
            bar.update(1)
