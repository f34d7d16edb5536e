"""A brute-force CEP reference, written apart from the NFA (tests only).

A pattern is given as a *spec* (plain dicts); :func:`build` turns a spec into a raystream
``Pattern`` and :func:`reference` computes the outputs straight from the definitions of
SEMANTICS §8: it enumerates every assignment of a key's events (in processing order) to the
stages and checks the constraints of each step directly, then replays the emission order to apply
the after-match skip strategy. Outputs are ``(kind, timestamp, ((event index, stage name), ...))``
with kind "match" or "timeout".
"""

from __future__ import annotations

from typing import Any

from raystream.cep import AfterMatchSkipStrategy, IterativeCondition, Pattern

MAX_TS = 2**63 - 1

# -- conditions: small picklable objects so that specs can also run on Ray --------------------------


class TypeIn:
    """Event ``(type, value)`` whose type is in ``types``."""

    def __init__(self, types: str):
        self.types = types

    def __call__(self, event: Any) -> bool:
        return event[0] in self.types

    def ref(self, event: Any, prefix: dict) -> bool:
        return event[0] in self.types


class NotBelowLast(IterativeCondition):
    """Type in ``types`` and value >= the value of the last event of stage ``stage`` so far."""

    def __init__(self, types: str, stage: str):
        self.types = types
        self.stage = stage

    def filter(self, value: Any, ctx: Any) -> bool:
        prior = ctx.get_events_for_pattern(self.stage)
        return value[0] in self.types and (not prior or value[1] >= prior[-1][1])

    def ref(self, event: Any, prefix: dict) -> bool:
        prior = prefix.get(self.stage, [])
        return event[0] in self.types and (not prior or event[1] >= prior[-1][1])


def build(spec: dict) -> Pattern:
    p: Any = None
    for st in spec["stages"]:
        kind = st["kind"]
        if kind == "begin":
            p = Pattern.begin(st["name"], _skip(spec))
        else:
            p = getattr(p, kind)(st["name"])
        p = p.where(st["cond"])
        q = st.get("quant")
        if q is not None:
            getattr(p, q[0])(*q[1:])
        if st.get("until") is not None:
            p.until(st["until"])
        if st.get("optional"):
            p.optional()
        if st.get("greedy"):
            p.greedy()
        if st.get("inner") == "consecutive":
            p.consecutive()
        elif st.get("inner") == "combinations":
            p.allow_combinations()
    if spec.get("within") is not None:
        p.within(spec["within"])
    return p


def _skip(spec: dict) -> AfterMatchSkipStrategy:
    s = spec.get("skip", ("no_skip",))
    return getattr(AfterMatchSkipStrategy, s[0])(*s[1:])


# -- the reference ---------------------------------------------------------------------------------


class _Stage:
    def __init__(self, st: dict, guards: list):
        self.name = st["name"]
        self.cond = st["cond"]
        self.until = st.get("until")
        q = st.get("quant")
        self.lo, self.hi = 1, 1
        if q is not None:
            if q[0] == "times":
                self.lo, self.hi = (q[1], q[1]) if len(q) == 2 else (q[1], q[2])
            elif q[0] == "one_or_more":
                self.lo, self.hi = 1, None
            elif q[0] == "times_or_more":
                self.lo, self.hi = q[1], None
        self.optional = bool(st.get("optional"))
        self.greedy = bool(st.get("greedy"))
        self.inner = {"consecutive": "strict", "combinations": "any"}.get(
            st.get("inner"), "relaxed"
        )
        self.entry = {
            "begin": "relaxed",
            "next": "strict",
            "followed_by": "relaxed",
            "followed_by_any": "any",
        }[st["kind"]]
        self.guards = guards  # [(kind, cond)]


def reference(spec: dict, events: list, stamps: list[int]) -> list[tuple]:
    stages: list[_Stage] = []
    guards: list = []
    for st in spec["stages"]:
        if st["kind"] in ("not_next", "not_followed_by"):
            guards.append((st["kind"], st["cond"]))
        else:
            stages.append(_Stage(st, guards))
            guards = []
    final = guards[0] if guards else None
    W = spec.get("within")
    n = len(events)
    m = len(stages)

    def prefix(a: tuple) -> dict:
        out: dict = {}
        for i, k in a:
            out.setdefault(stages[k].name, []).append(events[i])
        return out

    def count(a: tuple) -> int:
        j = a[-1][1]
        return sum(1 for _, k in a if k == j)

    def targets(a: tuple) -> list:
        j, c = a[-1][1], count(a)
        s = stages[j]
        out = [j] if s.hi is None or c < s.hi else []
        if c >= s.lo:
            k = j + 1
            while k < m:
                out.append(k)
                if not stages[k].optional:
                    return out
                k += 1
            if final is not None:
                out.append("final")
        return out

    def ready(a: tuple) -> bool:  # every stage after the last one may stay empty
        j = a[-1][1]
        return count(a) >= stages[j].lo and all(stages[k].optional for k in range(j + 1, m))

    def alive_through(a: tuple, t: Any, upto: int) -> bool:
        """Target ``t`` of ``a`` survives the events after its last one, up to ``upto`` excl."""
        p, j = a[-1]
        gap = range(p + 1, upto)
        pre = prefix(a)
        if t == "final":
            kind, cond = final
            if kind == "not_next":
                return not gap
            return not any(cond.ref(events[g], pre) for g in gap)
        s = stages[t]
        if t == j:
            if s.until is not None and any(s.until.ref(events[g], pre) for g in gap):
                return False
            contiguity = s.inner
        else:
            for kind, cond in [g for k in range(j + 1, t + 1) for g in stages[k].guards]:
                if kind == "not_next" and gap and cond.ref(events[p + 1], pre):
                    return False
                if kind == "not_followed_by" and any(cond.ref(events[g], pre) for g in gap):
                    return False
            if stages[j].greedy and gap and stages[j].cond.ref(events[p + 1], pre):
                return False
            contiguity = s.entry
        if contiguity == "strict":
            return not gap
        if contiguity == "relaxed":
            return not any(s.cond.ref(events[g], pre) for g in gap)
        return True

    def can_take(a: tuple, i: int, t: int) -> bool:
        if W is not None and stamps[i] - stamps[a[0][0]] >= W:
            return False
        if t not in targets(a) or not alive_through(a, t, i):
            return False
        p, j = a[-1]
        pre = prefix(a)
        s = stages[t]
        if t == j:
            if s.until is not None and s.until.ref(events[i], pre):
                return False
        else:
            for kind, cond in [g for k in range(j + 1, t + 1) for g in stages[k].guards]:
                if kind == "not_next" and i == p + 1 and cond.ref(events[i], pre):
                    return False
                if kind == "not_followed_by" and cond.ref(events[i], pre):
                    return False
            if stages[j].greedy and i == p + 1 and stages[j].cond.ref(events[i], pre):
                return False
        return s.cond.ref(events[i], pre)

    # every partial match (valid assignment prefix), grown take by take
    partials: list[tuple] = []
    frontier = []
    for i in range(n):
        for t in range(m):
            if stages[t].cond.ref(events[i], {}):
                frontier.append(((i, t),))
            if not stages[t].optional:
                break
    while frontier:
        partials.extend(frontier)
        nxt = []
        for a in frontier:
            for i in range(a[-1][0] + 1, n):
                for t in range(a[-1][1], m):
                    if can_take(a, i, t):
                        nxt.append((*a, (i, t)))
        frontier = nxt

    def release_point(a: tuple) -> int:
        """Index of the event before which the NFA time passes start + W (n: end of input)."""
        start = stamps[a[0][0]]
        for q in range(a[-1][0] + 1, n):
            if stamps[q] - start >= W:
                return q
        return n

    # candidates: (time point, phase, kind, timestamp, assignment); phase 0 = time advance
    # before event q, phase 1 = processing event q
    cands = []
    for a in partials:
        last = a[-1][0]
        if ready(a) and final is None:
            cands.append((last, 1, "match", stamps[last], a))
        if final is not None and ready(a):
            kind, cond = final
            if kind == "not_next":
                q = last + 1
                within_ok = W is None or (q < n and stamps[q] - stamps[a[0][0]] < W)
                if q < n and within_ok and not cond.ref(events[q], prefix(a)):
                    cands.append((q, 1, "match", stamps[q], a))
            else:
                q = release_point(a)
                if alive_through(a, "final", q):
                    cands.append((q, 0, "release", MAX_TS if q == n else stamps[q], a))
                    continue
        if W is not None:
            q = release_point(a)
            alive = [t for t in targets(a) if alive_through(a, t, q)]
            if alive:
                cands.append((q, 0, "timeout", stamps[a[0][0]] + W, a))

    skip = spec.get("skip", ("no_skip",))
    names = [s.name for s in stages]

    def bound(a: tuple) -> int:
        if skip[0] == "no_skip":
            return -1
        if skip[0] == "skip_to_next":
            return a[0][0] + 1
        if skip[0] == "skip_past_last_event":
            return a[-1][0] + 1
        ids = [i for i, k in a if names[k] == skip[1]]
        if not ids:
            return -1
        return ids[0] if skip[0] == "skip_to_first" else ids[-1]

    out = []
    below = -1
    points = sorted({(c[0], c[1]) for c in cands})
    for point in points:
        here = [c for c in cands if (c[0], c[1]) == point]
        # timeouts of a time advance are taken before its released matches prune
        for c in here:
            if c[2] == "timeout" and c[4][0][0] >= below:
                out.append(("timeout", c[3], c[4]))
        batch_below = below
        for c in sorted((c for c in here if c[2] != "timeout"), key=lambda c: [i for i, _ in c[4]]):
            if c[4][0][0] < batch_below:
                continue
            out.append(("match", c[3], c[4]))
            batch_below = max(batch_below, bound(c[4]))
        below = batch_below
    return [(k, ts, tuple((i, names[t]) for i, t in a)) for k, ts, a in out]
