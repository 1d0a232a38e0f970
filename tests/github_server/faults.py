"""Fault injection: 5xx, 429 with ``retry-after``, secondary and primary rate limits, slow
answers and connection resets, scripted per request or at a seeded rate."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Fault:
    """One injected failure. ``after``: the request takes effect, then the answer is lost."""

    kind: str  # status, reset, slow
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    message: str = "Server Error"
    delay: float = 0.0
    after: bool = False

    @classmethod
    def error(cls, status: int = 502, *, after: bool = False) -> Fault:
        return cls("status", status, message="Server Error", after=after)

    @classmethod
    def too_many(cls, retry_after: int = 0) -> Fault:
        return cls("status", 429, (("retry-after", str(retry_after)),), "Too Many Requests")

    @classmethod
    def secondary(cls, retry_after: int = 0) -> Fault:
        message = "You have exceeded a secondary rate limit. Please wait a few minutes."
        return cls("status", 403, (("retry-after", str(retry_after)),), message)

    @classmethod
    def primary(cls, reset_in: int = 1) -> Fault:
        headers = (
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-used", "5000"),
            ("x-ratelimit-reset", str(int(time.time()) + reset_in)),
        )
        return cls("status", 403, headers, "API rate limit exceeded for installation.")

    @classmethod
    def slow(cls, delay: float) -> Fault:
        return cls("slow", delay=delay)

    @classmethod
    def reset(cls, *, after: bool = False) -> Fault:
        return cls("reset", after=after)


TRANSIENT = (
    Fault.error(500),
    Fault.error(502),
    Fault.error(502, after=True),
    Fault.too_many(0),
    Fault.secondary(0),
    Fault.primary(0),
    Fault.reset(),
    Fault.reset(after=True),
    Fault.slow(0.01),
)


@dataclass
class Faults:
    """Which requests fail: ``script`` first (None = no fault), then ``rate`` at random."""

    script: list[Fault | None] = field(default_factory=list)
    rate: float = 0.0
    kinds: tuple[Fault, ...] = TRANSIENT
    seed: int = 0
    only: Callable[[str], bool] = lambda op: True
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def pick(self, op: str) -> Fault | None:
        with self._lock:
            if not self.only(op):
                return None
            if self.script:
                fault = self.script.pop(0)
            elif self.rate and self._random.random() < self.rate:
                fault = self._random.choice(self.kinds)
            else:
                fault = None
            if fault:
                self.injected[
                    f"{fault.kind}:{fault.status or ''}{':after' if fault.after else ''}"
                ] += 1
            return fault
