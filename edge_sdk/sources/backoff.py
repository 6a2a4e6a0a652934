"""Capped exponential backoff with jitter, so a fleet does not reconnect to one server in lockstep."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``n`` (0-based): ``min(max_s, initial_s * 2**n)``, less up to ``jitter`` of it."""

    initial_s: float
    max_s: float
    jitter: float = 0.5

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        base = min(self.max_s, self.initial_s * 2.0 ** min(attempt, 32))
        return base * (1.0 - self.jitter * (rng or random).random())
