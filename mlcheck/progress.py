"""Progress during long runs: a status line every few seconds.

pytest's own dots and percentages are unreadable in CI logs of big suites and say nothing about
failures so far; a line like ``mlcheck: 1,200/5,000 done (24%) · 3 failed · 1 error · ~4 min
05 s left`` every ``interval`` seconds (0: after every test; negative: never) is readable in a
terminal and in a log alike (a live bar would fight pytest's own output). Pure: the plugin feeds
it finished tests and prints what it returns.

The estimate of the time left waits for ``ETA_AFTER`` finished tests and leaves the first one
out of the rate: it carries the imports and session fixtures (a 20 s first test of 2,800 read
"~15.6h left").

>>> p = Progress(interval=0, clock=iter([0.0, 20.0, 21.0, 22.0, 23.0, 24.0]).__next__)
>>> p.total = 10
>>> p.finished("passed")
'mlcheck: 1/10 done (10%)'
>>> for _ in range(3):
...     _ = p.finished("passed")
>>> p.finished("passed")
'mlcheck: 5/10 done (50%) · ~5.0 s left'
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from .text import duration_text  # one duration format for all mlcheck prints

ETA_AFTER = 5  # finished tests before the first estimate of the time left


class Progress:
    def __init__(self, interval: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.total: int | None = None
        self.done = 0
        self.failed = 0
        self.errors = 0
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._first: float | None = None  # when the first test finished

    def finished(self, outcome: str) -> str | None:
        """Count one finished test (``passed``, ``failed``, ``error``...); returns the status line
        when it is time to show one."""
        self.done += 1
        self.failed += outcome == "failed"
        self.errors += outcome == "error"
        now = self._clock()
        if self._first is None:
            self._first = now
        if self.interval < 0 or now - self._last < self.interval:
            return None
        self._last = now
        return self.line(now)

    def line(self, now: float) -> str:
        parts = [f"mlcheck: {self.done:,}" + (f"/{self.total:,}" if self.total else "") + " done"]
        if self.total:
            parts[0] += f" ({100 * self.done // self.total}%)"
        if self.failed:
            parts.append(f"{self.failed:,} failed")
        if self.errors:
            parts.append(f"{self.errors:,} error" + ("s" if self.errors > 1 else ""))
        if self.total and self.done >= ETA_AFTER and self._first is not None:
            left = (now - self._first) / (self.done - 1) * (self.total - self.done)
            parts.append(f"~{duration_text(left)} left")
        return " · ".join(parts)


# -- progress inside one long check (a training check that runs for more than a few seconds) --

CHECK_AFTER = 5.0  # seconds a check runs before its first progress line
CHECK_EVERY = 10.0  # seconds between its later lines

# Where a check's progress lines go: the pytest plugin (in a run that opted in) points this at
# the terminal, past pytest's output capture; otherwise lines go to stderr (captured by pytest
# and shown with a failure; under xdist, workers print nothing live).
check_sink: Callable[[str], None] | None = None


class CheckProgress:
    """Rate-limited progress lines for one check: nothing for a check that ends within
    ``after`` seconds, then a line every ``every`` seconds.

    >>> ticks = iter([0.0, 1.0, 6.0, 7.0, 17.0]).__next__
    >>> lines = []
    >>> p = CheckProgress("assert_overfits", 300, clock=ticks, sink=lines.append)
    >>> for step in (10, 20, 30, 40):
    ...     p.step(step, loss=0.5)
    >>> lines
    ['mlcheck: assert_overfits step 20/300, loss 0.5 (6.0 s)', \
'mlcheck: assert_overfits step 40/300, loss 0.5 (17.0 s)']
    """

    def __init__(
        self,
        check: str,
        total: int,
        *,
        after: float | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sink: Callable[[str], None] | None = None,
    ) -> None:
        self.check, self.total = check, total
        self.after = CHECK_AFTER if after is None else after
        self.every = CHECK_EVERY if every is None else every
        self._clock = clock
        self._sink = sink
        self._start = clock()
        self._next = self._start + self.after

    def step(self, step: int, loss: float) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.every
        line = (
            f"mlcheck: {self.check} step {step}/{self.total}, loss {loss:.4g} "
            f"({duration_text(now - self._start)})"
        )
        sink = self._sink or check_sink
        if sink is not None:
            sink(line)
        else:
            print(line, file=sys.stderr, flush=True)
