import pytest

from drive.ring import RingBuffer


def filled(times, capacity=64, max_age_s=float("inf")):
    ring = RingBuffer(capacity, max_age_s)
    for t in times:
        ring.push(t, f"f{t}")
    return ring


def items(entries):
    return [e.item for e in entries]


def test_select_closest_to_each_stride_by_hand():
    # decisions at uneven times; now = 1.00, stride 0.25 → targets 1.00, 0.75, 0.50
    ring = filled([0.40, 0.52, 0.61, 0.70, 0.83, 0.91, 1.00])
    # 1.00 → 1.00; 0.75 → 0.70 (|-0.05| beats 0.83's 0.08); 0.50 → 0.52
    assert items(ring.select(1.00, 3, 0.25)) == ["f0.52", "f0.7", "f1.0"]


def test_select_targets_count_from_now_not_the_newest_entry():
    ring = filled([0.0, 0.1, 0.2, 0.3])
    # now 0.44, stride 0.2 → targets 0.44, 0.24, 0.04: 0.3 (newest, 0.14 off), 0.2, 0.0
    assert items(ring.select(0.44, 3, 0.2)) == ["f0.0", "f0.2", "f0.3"]


def test_older_slots_search_only_older_entries():
    # slot 1 (target 0.75) takes 0.90, the closest; slot 2 has nothing older left → repeats 0.90
    ring = filled([0.90, 0.95, 1.00])
    assert items(ring.select(1.0, 3, 0.25)) == ["f0.9", "f0.9", "f1.0"]
    # an entry is never used for two slots while an older one exists
    ring = filled([0.0, 0.97, 1.0])
    assert items(ring.select(1.0, 3, 0.01)) == ["f0.0", "f0.97", "f1.0"]


def test_short_history_repeats_the_oldest():
    assert items(filled([0.5]).select(0.5, 3, 0.25)) == ["f0.5", "f0.5", "f0.5"]
    assert items(filled([0.3, 0.5]).select(0.5, 4, 0.25)) == ["f0.3", "f0.3", "f0.3", "f0.5"]


def test_tie_goes_to_the_older_entry():
    ring = filled([0.0, 0.5, 1.0])
    # slot 0 takes 1.0; slot 1 looks for 0.25, exactly between 0.0 and 0.5 → the older, 0.0
    assert items(ring.select(1.0, 2, 0.75)) == ["f0.0", "f1.0"]


def test_capacity_and_max_age_drop_old_entries():
    ring = filled([0, 1, 2, 3, 4], capacity=3)
    assert [e.t for e in ring.entries] == [2, 3, 4]
    ring = filled([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], max_age_s=0.25)
    # one entry at or beyond the age (0.2 is 0.3 old) is kept as the oldest candidate
    assert [e.t for e in ring.entries] == [0.2, 0.3, 0.4, 0.5]


def test_time_going_back_and_empty_select_raise():
    ring = filled([1.0])
    with pytest.raises(ValueError, match="go back"):
        ring.push(0.5, "x")
    ring.clear()
    with pytest.raises(ValueError, match="empty"):
        ring.select(1.0, 3, 0.25)
