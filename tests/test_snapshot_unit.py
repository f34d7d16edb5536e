"""Snapshot mechanics without Ray: cutting snapshots up for another parallelism, the snapshot
encoding's checksum, and the restart strategies' decisions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream import RestartStrategies
from raystream.checkpointing.operator_state import EVEN_SPLIT, UNION
from raystream.checkpointing.snapshot import (
    OperatorSnapshot,
    StateMappingError,
    TaskSnapshot,
    assign,
    decode,
    encode,
)
from raystream.checkpointing.storage import CorruptCheckpointError
from raystream.core.keys import key_group_range


def old_snapshots(p_old: int, max_p: int) -> dict[int, OperatorSnapshot]:
    """Every key group holds a blob naming it; timers likewise; one even-split and one union
    list per subtask."""
    out = {}
    for i in range(p_old):
        kgs = key_group_range(i, p_old, max_p)
        out[i] = OperatorSnapshot(
            keyed={kg: f"kg{kg}".encode() for kg in kgs},
            timers={kg: [(0, kg, f"key{kg}", None)] for kg in kgs if kg % 3 == 0},
            operator={
                "offsets": (EVEN_SPLIT, [f"s{i}-{j}" for j in range(i + 1)]),
                "splits": (UNION, [i]),
            },
            broadcast={"rules": {"r": 1}},
        )
    return out


@settings(max_examples=60, deadline=None)
@given(
    p_old=st.integers(1, 9),
    p_new=st.integers(1, 9),
    max_p=st.sampled_from([9, 16, 128]),
)
def test_assign_gives_every_key_group_to_its_new_owner_once(p_old, p_new, max_p):
    old = old_snapshots(p_old, max_p)
    new = assign(old, p_new, max_p, "op")
    seen_kgs: list[int] = []
    even: list[str] = []
    for j, snap in enumerate(new):
        assert snap is not None  # union and broadcast state go everywhere
        mine = key_group_range(j, p_new, max_p)
        assert set(snap.keyed) <= set(mine)
        assert all(snap.keyed[kg] == f"kg{kg}".encode() for kg in snap.keyed)
        assert set(snap.timers) <= set(mine)
        seen_kgs.extend(snap.keyed)
        even.extend(snap.operator["offsets"][1])
        assert snap.operator["splits"] == (UNION, list(range(p_old)))
        assert snap.broadcast == {"rules": {"r": 1}}
    assert sorted(seen_kgs) == list(range(max_p))
    expected = [f"s{i}-{j}" for i in range(p_old) for j in range(i + 1)]
    assert sorted(even) == sorted(expected)


def test_assign_rejects_key_groups_beyond_max_parallelism():
    old = {0: OperatorSnapshot(keyed={200: b"x"})}
    with pytest.raises(StateMappingError, match="max parallelism"):
        assign(old, 2, 128, "op")


def test_subtasks_without_state_get_none():
    old = {0: OperatorSnapshot(keyed={0: b"a"})}
    new = assign(old, 4, 128, "op")
    assert new[0] is not None and new[1:] == [None, None, None]


def test_encoding_detects_corruption():
    data = encode(TaskSnapshot(3, {"op": OperatorSnapshot(keyed={1: b"abc"})}))
    assert decode(data).operators["op"].keyed == {1: b"abc"}
    broken = bytearray(data)
    broken[10] ^= 1
    with pytest.raises(CorruptCheckpointError):
        decode(bytes(broken))
    with pytest.raises(CorruptCheckpointError):
        decode(data[:20])


def test_fixed_delay_restart_counts_attempts():
    s = RestartStrategies.fixed_delay_restart(2, 500)
    assert [s.next_delay_ms(t) for t in (0, 1, 2)] == [500, 500, None]


def test_failure_rate_restart_fails_above_the_rate():
    s = RestartStrategies.failure_rate_restart(2, 60_000, 100)
    assert s.next_delay_ms(0) == 100
    assert s.next_delay_ms(10_000) == 100
    assert s.next_delay_ms(20_000) is None  # a third failure within one minute
    s = RestartStrategies.failure_rate_restart(2, 60_000, 100)
    assert [s.next_delay_ms(t) for t in (0, 70_000, 140_000, 210_000)] == [100] * 4


def test_exponential_delay_grows_caps_and_resets():
    s = RestartStrategies.exponential_delay_restart(
        initial_backoff=100,
        max_backoff=1000,
        backoff_multiplier=2.0,
        reset_backoff_threshold=10_000,
        jitter_factor=0.0,
    )
    assert [s.next_delay_ms(t) for t in (0, 1, 2, 3, 4, 5)] == [100, 200, 400, 800, 1000, 1000]
    assert s.next_delay_ms(100_000) == 100  # quiet for longer than the threshold: start over
    j = RestartStrategies.exponential_delay_restart(initial_backoff=1000, jitter_factor=0.1)
    assert 900 <= j.next_delay_ms(0) <= 1100


def test_no_restart_never_restarts():
    assert RestartStrategies.no_restart().next_delay_ms(0) is None
