"""Exponential backoff with jitter, for everything Tracelet retries."""

from __future__ import annotations

import random

import attrs


@attrs.frozen
class RetryPolicy:
    """Exponential backoff: ``initial`` seconds, doubling up to ``maximum``, with jitter.

    The cap is short on purpose: a backend that is down costs one refused connection per
    try, and a backend that comes back is found again within about ``maximum`` seconds.
    """

    initial: float = 0.2
    maximum: float = 1.0
    jitter: float = 0.1

    def delays(self) -> DelayIterator:
        """A fresh sequence of delays."""
        return DelayIterator(self)


class DelayIterator:
    """The delays of one failure episode."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.next_delay = policy.initial

    def __next__(self) -> float:
        delay = self.next_delay
        self.next_delay = min(delay * 2, self.policy.maximum)
        return delay * (1 + random.uniform(-self.policy.jitter, self.policy.jitter))
