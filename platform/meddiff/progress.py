"""Progress lines for long work: done/total, rate, ETA (training steps, scored images)."""

from __future__ import annotations

import sys
import time
from typing import Callable


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Prints ``label done/total (pct) | rate unit/s | ETA ...`` at most every ``every_s`` seconds (and at the end).

    ``start`` lets a resumed job count only the work done in this process for its rate.
    """

    def __init__(
        self, total: int, label: str, unit: str = "it", every_s: float = 10.0, start: int = 0,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.total, self.label, self.unit, self.every_s = total, label, unit, every_s
        self.start = self.done = start
        self.t0 = self.last = time.monotonic()
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.t0
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else float("nan")

    def line(self, extra: str = "") -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = self.eta()
        eta_s = format_duration(eta) if eta == eta else "?"
        parts = [f"{self.label} {self.done}/{self.total} ({pct:.0f}%)", f"{self.rate:.2f} {self.unit}/s", f"ETA {eta_s}"]
        if extra:
            parts.insert(1, extra)
        return " | ".join(parts)

    def update(self, n: int = 1, extra: str = "", force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if force or self.done >= self.total or now - self.last >= self.every_s:
            self.last = now
            self.write(self.line(extra))
