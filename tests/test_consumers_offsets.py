"""Offset tracker: commit points under out-of-order completion, rewinds and revokes."""

from __future__ import annotations

from consumers.offsets import OffsetTracker

P0, P1 = ("posts", 0), ("posts", 1)


def test_commit_point_is_lowest_unfinished_offset_under_out_of_order_completion():
    tracker = OffsetTracker()
    leases = {o: tracker.start(P0, o) for o in range(10, 15)}
    assert tracker.commit_points() == {P0: 10}  # nothing finished: commit point = first started
    tracker.committed({P0: 10})
    for offset in (12, 14, 11):
        tracker.finish(leases[offset], offset)
    assert tracker.commit_points() == {}  # 10 still open: nothing new to commit
    tracker.finish(leases[10], 10)
    assert tracker.commit_points() == {P0: 13}  # 10, 11, 12 done; 13 open
    tracker.finish(leases[13], 13)
    assert tracker.commit_points() == {P0: 15}
    assert tracker.pending() == 0


def test_partitions_are_independent_and_gaps_in_offsets_are_fine():
    tracker = OffsetTracker()
    a = tracker.start(P0, 0)
    b = tracker.start(P1, 100)
    c = tracker.start(P1, 105)  # compacted topics leave gaps
    tracker.finish(b, 100)
    tracker.finish(c, 105)
    assert tracker.commit_points() == {P0: 0, P1: 106}
    assert tracker.pending(P0) == 1 and tracker.pending(P1) == 0
    tracker.finish(a, 0)
    assert tracker.commit_points([P0]) == {P0: 1}


def test_revoke_drops_unfinished_work_and_ignores_late_completions():
    tracker = OffsetTracker()
    lease = tracker.start(P0, 5)
    tracker.start(P0, 6)
    tracker.finish(lease, 5)
    assert tracker.revoke([P0]) == 1
    assert lease.revoked
    assert tracker.commit_points() == {}
    assert not tracker.finish(lease, 6)  # late completion of revoked work is ignored
    fresh = tracker.start(P0, 6)  # reassigned later: a new lease, tracking restarts
    assert fresh is not lease and not fresh.revoked
    assert tracker.commit_points() == {P0: 6}


def test_rewind_within_an_assignment_starts_a_fresh_lease():
    tracker = OffsetTracker()
    old = tracker.start(P0, 7)
    tracker.start(P0, 8)
    rewound = tracker.start(P0, 7)  # the client re-fetched from the committed offset
    assert old.revoked and rewound is not old
    assert not tracker.finish(old, 8)
    assert tracker.finish(rewound, 7)
    assert tracker.commit_points() == {P0: 8}


def test_committed_points_are_not_reported_again():
    tracker = OffsetTracker()
    lease = tracker.start(P0, 0)
    tracker.finish(lease, 0)
    tracker.committed(tracker.commit_points())
    assert tracker.commit_points() == {}


def test_records_of_a_partition_revoked_meanwhile_are_not_taken():
    tracker = OffsetTracker()
    tracker.assign(P0)
    tracker.start(P0, 10)  # in flight when the revoke comes
    tracker.finish(tracker.start(P0, 11), 11)
    assert tracker.revoke([P0]) == 1
    # A record of the same poll, handled after the revoke, must not re-create the partition: its
    # commit point (13) would skip offset 10, which the revoke dropped for the new owner to redo.
    assert tracker.start_owned(P0, 12) is None
    assert tracker.partitions == [] and tracker.commit_points() == {}
    tracker.assign(P0)  # assigned again: taken normally
    assert tracker.start_owned(P0, 10) is not None and tracker.commit_points() == {P0: 10}
