"""One deadline per call: a tool's timeout_s covers the attach, the request and any fallback, so every
step asks the same Deadline what is left instead of each starting its own timeout."""
from __future__ import annotations

import time
from typing import Callable


class Deadline:
    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self.start = clock()
        self.at = self.start + seconds

    def left(self, floor: float = 0.0) -> float:
        """Seconds left (never below floor: a wait of 0 would mean "do not wait at all")."""
        return max(self.at - self._clock(), floor)

    def spent(self) -> float:
        return self._clock() - self.start

    @property
    def expired(self) -> bool:
        return self._clock() >= self.at

    def keeping(self, reserve: float) -> "Deadline":
        """A deadline that ends `reserve` seconds before this one (so much is kept for a step after
        it, such as the reading from outside); at most half of what is left is kept."""
        inner = Deadline.__new__(Deadline)
        inner._clock, inner.start = self._clock, self.start
        inner.at = self.at - min(reserve, self.left() / 2)
        inner.seconds = inner.at - inner.start
        return inner

    def __repr__(self) -> str:
        return f"Deadline({self.left():.3f}s left of {self.seconds}s)"
