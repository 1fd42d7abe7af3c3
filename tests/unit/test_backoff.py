from __future__ import annotations

import random

from ftpsource.watcher import Backoff


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    b = Backoff(base=1.0, cap=60.0, rng=random.Random(7))
    delays = [b.next() for _ in range(12)]
    for attempt, d in enumerate(delays):
        ceiling = min(60.0, 2.0**attempt)
        assert ceiling / 2 <= d <= ceiling  # "equal jitter": never a thundering herd at exactly 2^n
    assert max(delays) <= 60.0 and delays[-1] >= 30.0
    b.reset()
    assert 0.5 <= b.next() <= 1.0


def test_jitter_differs_between_sources() -> None:
    a = [Backoff(rng=random.Random(1)).next() for _ in range(1)]
    b = [Backoff(rng=random.Random(2)).next() for _ in range(1)]
    assert a != b
