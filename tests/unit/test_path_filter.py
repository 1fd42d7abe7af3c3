"""The path filter's memo of verdicts follows the listed tree instead of growing to its cap."""

from __future__ import annotations

from ftpsource.core.detect import Policy, plan_poll
from ftpsource.core.model import Entry
from ftpsource.core.paths import MEMO_MAX, MEMO_MIN, PathFilter


def _poll(policy: Policy, paths: list[str]) -> None:
    plan_poll([Entry(p, 1, 1.0) for p in paths], {}, 10.0, policy, first_start=True)


def test_daily_turnover_keeps_the_memo_near_the_listing_size() -> None:
    policy = Policy(path_filter=PathFilter(["**/*.csv"], [], recursive=True))
    largest = 0
    for day in range(40):  # 1,000 new names a day, yesterday's gone
        _poll(policy, [f"d{day}/f{i}.csv" for i in range(1_000)])
        largest = max(largest, len(policy.path_filter.verdicts))
    assert largest <= MEMO_MIN  # without the sizing it reaches 40,000 (the cap is far above)
    assert MEMO_MAX > 40_000


def test_an_unchanged_big_tree_keeps_every_verdict() -> None:
    policy = Policy(path_filter=PathFilter(["**/*.csv"], [], recursive=True))
    tree = [f"d{i % 100}/f{i}.csv" for i in range(30_000)]
    _poll(policy, tree)
    memo = dict(policy.path_filter.verdicts)
    _poll(policy, tree)
    assert len(memo) == 30_000 and dict(policy.path_filter.verdicts) == memo
