"""Micro-batcher: size and age triggers, oldest-first fairness, grouping by text length."""

from __future__ import annotations

import pytest

from consumers.batcher import MicroBatcher


def make(max_batch=4, max_wait=0.05, window=4) -> MicroBatcher[str]:
    return MicroBatcher(max_batch, max_wait, len, group_window=window)


def test_flushes_at_max_batch():
    batcher = make()
    for i in range(3):
        batcher.add("x" * i, now=0.0)
    assert not batcher.due(0.0)
    batcher.add("abc", now=0.0)
    assert batcher.due(0.0) and batcher.time_until_due(0.0) == 0.0
    assert len(batcher.take()) == 4 and len(batcher) == 0


def test_flushes_when_oldest_waited_max_wait():
    batcher = make(max_wait=0.05)
    batcher.add("a", now=1.0)
    batcher.add("b", now=1.03)
    assert not batcher.due(1.04)
    assert batcher.time_until_due(1.04) == pytest.approx(0.01)
    assert batcher.due(1.05)
    assert batcher.take() == ["a", "b"]
    assert batcher.time_until_due(2.0) is None and not batcher.due(2.0)


def test_batches_group_similar_lengths_and_always_include_the_oldest():
    batcher = make(max_batch=3, window=4)
    texts = ["m" * 50, "s" * 2, "l" * 400, "s" * 3, "l" * 390, "s" * 1, "l" * 410, "m" * 55]
    for i, text in enumerate(texts):
        batcher.add(text, now=float(i))
    # sorted lengths 1 2 3 50 55 390 400 410; the tightest 3-window holding the oldest (50) is 2 3 50
    first = batcher.take()
    assert sorted(map(len, first)) == [2, 3, 50]
    second = batcher.take()  # oldest left is the 400: the long texts go together
    assert sorted(map(len, second)) == [390, 400, 410]
    assert sorted(map(len, batcher.take())) == [1, 55]
    assert len(batcher) == 0


def test_full_caps_the_pool_and_take_returns_items_in_arrival_order():
    batcher = make(max_batch=2, window=2)
    for text in ("bb", "a", "ccc", "dd"):
        batcher.add(text, now=0.0)
    assert batcher.full
    batch = batcher.take()
    assert batch == ["bb", "a"] or batch == ["bb", "dd"]
    assert not batcher.full


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        MicroBatcher(0, 0.1, len)
    with pytest.raises(ValueError):
        MicroBatcher(4, 0, len)
