"""The timer service against a brute-force reference (no Ray).

The reference keeps every live timer with its registration number and fires by scanning for the
smallest (timestamp, registration number); the service under test keeps per-timestamp buckets.
Registrations and deletions also happen while timers fire, as ``on_timer`` code does.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.core.timers import EVENT_TIME, PROCESSING_TIME, TimerService


class Reference:
    def __init__(self) -> None:
        self.live: dict[tuple, int] = {}  # (domain, ts, key, ns) -> registration number
        self.n = 0

    def register(self, domain, ts, key, ns=None):
        if (domain, ts, key, ns) not in self.live:
            self.live[(domain, ts, key, ns)] = self.n
            self.n += 1

    def delete(self, domain, ts, key, ns=None):
        self.live.pop((domain, ts, key, ns), None)

    def due(self, domain, upto):
        while True:
            cands = [
                (ts, seq, t) for t, seq in self.live.items() if t[0] == domain for ts in [t[1]]
            ]
            cands = [c for c in cands if c[0] <= upto]
            if not cands:
                return
            _, _, t = min(cands)
            del self.live[t]
            yield t[1], t[2], t[3]

    def take_due(self, domain, upto):
        fired = list(self.due(domain, upto))
        for ts in sorted({ts for ts, _, _ in fired}):
            yield ts, {(k, ns): None for t, k, ns in fired if t == ts}

    def next_timestamp(self, domain):
        stamps = [t[1] for t in self.live if t[0] == domain]
        return min(stamps) if stamps else None

    def num_timers(self):
        return len(self.live)


timer = st.tuples(
    st.sampled_from([EVENT_TIME, PROCESSING_TIME]),
    st.integers(0, 12),
    st.sampled_from(["a", "b", "c", 1, 2]),
    st.sampled_from([None, "w1", ("w", 2)]),
)
reaction = st.tuples(st.sampled_from(["register", "delete"]), timer)
op = st.one_of(
    st.tuples(st.just("register"), timer),
    st.tuples(st.just("delete"), timer),
    st.tuples(
        st.just("take"),
        st.tuples(st.sampled_from([EVENT_TIME, PROCESSING_TIME]), st.integers(-1, 14)),
    ),
    st.tuples(
        st.just("fire"),
        st.tuples(
            st.sampled_from([EVENT_TIME, PROCESSING_TIME]),
            st.integers(-1, 14),
            st.lists(st.lists(reaction, max_size=3), max_size=6),
        ),
    ),
)


def run(service, ops) -> list:
    seen: list = []
    for kind, arg in ops:
        if kind in ("register", "delete"):
            getattr(service, kind)(*arg)
        elif kind == "take":  # whole buckets, nothing registered meanwhile
            for ts, bucket in service.take_due(*arg):
                seen.extend(("fired", arg[0], (ts, k, ns)) for k, ns in bucket)
        else:
            domain, upto, reactions = arg
            for i, fired in enumerate(service.due(domain, upto)):
                seen.append(("fired", domain, fired))
                for what, t in reactions[i] if i < len(reactions) else []:
                    getattr(service, what)(*t)
        seen.append(
            (
                service.num_timers(),
                service.next_timestamp(EVENT_TIME),
                service.next_timestamp(PROCESSING_TIME),
            )
        )
    return seen


@settings(max_examples=400, deadline=None)
@given(st.lists(op, max_size=40))
def test_timers_match_the_reference(ops):
    assert run(TimerService(), ops) == run(Reference(), ops)


@settings(max_examples=100, deadline=None)
@given(st.lists(op, max_size=30), st.lists(st.tuples(st.integers(0, 1), st.integers(0, 14))))
def test_snapshot_and_restore_keep_every_timer(ops, fires):
    service = TimerService()
    run(service, ops)
    snap = service.snapshot(lambda key: hash(str(key)) % 4)
    restored = TimerService()
    restored.restore([e for entries in snap.values() for e in entries])
    assert restored.num_timers() == service.num_timers()
    for domain, upto in fires:  # the same timers fire, in timestamp order
        got = sorted(restored.due(domain, upto), key=repr)
        want = sorted(service.due(domain, upto), key=repr)
        assert got == want
        assert [t for t, _, _ in restored.due(domain, upto)] == []


def test_many_timers_on_one_timestamp_fire_in_registration_order():
    service = TimerService()
    for k in range(1000):
        service.register(EVENT_TIME, 5, f"k{k}", "w")
    service.register(EVENT_TIME, 3, "first", "w")
    service.delete(EVENT_TIME, 5, "k10", "w")
    fired = [key for _, key, _ in service.due(EVENT_TIME, 5)]
    assert fired == ["first"] + [f"k{k}" for k in range(1000) if k != 10]
    assert service.num_timers() == 0 and service.next_timestamp(EVENT_TIME) is None


def test_stopping_early_leaves_the_rest_registered():
    service = TimerService()
    for k in range(5):
        service.register(EVENT_TIME, 7, k)
    it = service.due(EVENT_TIME, 10)
    assert next(it)[1] == 0
    it.close()
    assert service.num_timers() == 4
    assert [key for _, key, _ in service.due(EVENT_TIME, 10)] == [1, 2, 3, 4]
