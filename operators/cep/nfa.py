"""Internal: the NFA that runs a compiled pattern (``compiled.py``) over one key's events.

The NFA needs no Ray and no operator: ``process(state, event, ts)`` and ``advance(state, t)`` work
on a key's :class:`KeyState` and return what to emit; ``screen(events)`` drops, for the patterns
that allow it, the events no partial match can use. The operator (``operator.py``) decides when
to call them (event-time order, watermarks, processing time).

A partial match (``PM``) is the stage ``j`` its last event was taken into, how many events that
stage holds (``taken``), the buffer node of that event (``buffer.py``), the start timestamp and
event id, and its *targets*: the stages its next event may go to (``j`` itself while the loop is
not full; later stages once ``j`` has enough, passing over optional ones; ``FINAL`` for a pending
ending negation). An event that arrives is offered to every target:

- a NOT stage between ``j`` and the target kills the target if the event matches it
  (``not_next``: only the first event after the take; ``not_followed_by``: any event);
- a ``greedy`` loop ``j`` kills its leaving targets if the first event after the take still
  matches the loop;
- ``until`` kills the loop target;
- the event is taken if it matches the target's condition (and fits ``within``); strict
  contiguity then drops the target in any case, relaxed contiguity drops it if the event was
  taken (skip till *next* match), skip-till-any keeps it.

A PM without targets dies silently. A take into the last stage (or a stage after which only
optional stages follow) completes a match; the after-match skip strategy then prunes (SEMANTICS
§8.2). ``advance(t)`` times out partial matches with ``t - start >= within`` (reported with
timestamp ``start + within``) and releases those pending on an ending ``not_followed_by`` as
matches.

Cost per event: every simple condition is evaluated at most once per event (a per-event cache
indexed by the condition's slot, filled on first use, so a condition no partial match needs is
not called); a partial match the event leaves unchanged is kept as the same object; ``advance``
is one comparison unless the key's oldest partial match is due (``KeyState.earliest``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress
from typing import Any, NamedTuple

from raystream.operators.cep.buffer import EID, STAGE, Node, chain, flatten, unflatten
from raystream.operators.cep.buffer import EVENT as _EVENT
from raystream.operators.cep.buffer import events_of_stage as _events_of_stage
from raystream.operators.cep.compiled import FINAL, NO_SLOT, Check, CompiledPattern
from raystream.operators.cep.pattern import Contiguity, MalformedPatternError, SkipKind

_STRICT = Contiguity.STRICT
_ANY = Contiguity.ANY
_NOT_NEXT = Contiguity.NOT_NEXT
_NOT_FOLLOWED = Contiguity.NOT_FOLLOWED
_new_tuple = tuple.__new__  # builds a NamedTuple without its Python-level __new__


class ConditionError(Exception):
    """A user condition raised; the operator wraps it naming pattern, stage and record."""

    def __init__(self, stage: str, kind: str, event: Any, cause: BaseException):
        super().__init__(f"{kind} of stage {stage!r} raised {type(cause).__name__}: {cause}")
        self.stage = stage
        self.kind = kind
        self.event = event
        self.cause = cause


class PM(NamedTuple):
    """A partial match (see the module docstring)."""

    stage: int
    taken: int  # events in that stage so far
    node: Node  # the buffer node of its last event
    start_ts: int
    start_eid: int
    targets: tuple[int, ...]
    fresh: bool  # no event processed since its last take


class KeyState:
    """What the NFA keeps per key: the live partial matches (which hold the buffer's nodes), the
    next event id, the smallest start timestamp of a partial match (``earliest``; None without
    partial matches), and the timestamp of the key's pending ``within`` timer (``timer_ts``, kept
    by the operator).

    Pickled in the flat form of :func:`~raystream.operators.cep.buffer.flatten`: each event and
    node once, however many partial matches share it."""

    __slots__ = ("partials", "next_eid", "earliest", "timer_ts", "watch")

    def __init__(self) -> None:
        self.partials: list[PM] = []
        self.next_eid = 0
        self.earliest: int | None = None
        self.timer_ts: int | None = None
        #: a slot mask covering the conditions the partial matches look at (a superset after
        #: partial matches died, which costs time, never correctness; -1: to be worked out).
        #: Derived, so not serialized.
        self.watch = 0

    def __getstate__(self) -> tuple:
        nodes, events, heads = flatten([p.node for p in self.partials])
        partials = [(*p[:2], h, *p[3:]) for p, h in zip(self.partials, heads)]
        return (partials, nodes, events, self.next_eid, self.earliest, self.timer_ts)

    def __setstate__(self, state: tuple) -> None:
        partials, nodes, events, self.next_eid, self.earliest, self.timer_ts = state
        self.watch = -1
        built = unflatten(nodes, events)
        self.partials = [PM(p[0], p[1], built[p[2]], *p[3:]) for p in partials]


class Match(NamedTuple):
    events: list[Node]  # the buffer nodes of the match, first event first

    def start_eid(self) -> int:
        return self.events[0][EID]  # type: ignore[no-any-return]


class _Ctx:
    """``ctx`` of iterative conditions: the events the partial match has so far."""

    __slots__ = ("node", "names")

    def __init__(self, node: Node | None, names: list[str]):
        self.node = node
        self.names = names

    def get_events_for_pattern(self, name: str) -> list:
        if name not in self.names:
            raise KeyError(f"no stage {name!r} in the pattern (stages: {self.names})")
        return _events_of_stage(self.node, self.names.index(name))


_NOTHING: tuple = ()


class NFA:
    """Runs a :class:`CompiledPattern` for one key at a time."""

    def __init__(self, compiled: CompiledPattern):
        self.p = compiled
        self._blank: list[bool | None] = [None] * compiled.num_slots

    def as_dict(self, match: Match) -> dict[str, list]:
        """The match as Flink gives it: stage name -> events, in pattern order."""
        out: dict[str, list] = {}
        names = self.p.names
        for node in match.events:
            name = names[node[STAGE]]
            events = out.get(name)
            if events is None:
                out[name] = [node[_EVENT]]
            else:
                events.append(node[_EVENT])
        return out

    # -- conditions -------------------------------------------------------------------------------

    def _eval(self, check: Check, event: Any, node: Node | None, cache: list) -> bool:
        """Evaluates ``check`` (called on a cache miss; stores simple results in ``cache``)."""
        cond = check.cond
        try:
            if check.slot == NO_SLOT:
                return bool(cond(event, _Ctx(node, self.p.names)))
            r = bool(cond.fn(event)) if cond.op == "leaf" else bool(cond(event, None))
        except Exception as exc:
            raise ConditionError(check.stage, check.kind, event, exc) from exc
        cache[check.slot] = r
        return r

    # -- events -----------------------------------------------------------------------------------

    def screen(self, events: list, stamps: list) -> tuple[list, list, list]:
        """Of a ``droppable`` pattern: the events that match one of its conditions (the others
        change no partial match and start none), their stamps, and each one's condition
        results by slot, up to the first that holds (for :meth:`process`, which evaluates the
        rest if it needs them). A condition that raises keeps the event and leaves its result
        open, so that it raises only if a partial match needs it."""
        checks = self.p.all_simple
        if len(self._blank) == 1:  # one condition (say "3 failed logins"): one call per event
            try:
                flags = list(map(checks[0][1], events))
            except Exception:
                pass  # the loop below finds which
            else:
                kept = list(compress(events, flags))
                return kept, list(compress(stamps, flags)), [[True] for _ in kept]
        blank = self._blank
        kept = []
        kept_ts: list = []
        results: list = []
        for event, ts in zip(events, stamps):
            cache = blank[:]
            keep = False
            for slot, simple in checks:
                try:
                    if simple(event):
                        cache[slot] = keep = True
                        break  # (the NFA evaluates the others if it needs them)
                    cache[slot] = False
                except Exception:
                    keep = True
            if keep:
                kept.append(event)
                kept_ts.append(ts)
                results.append(cache)
        return kept, kept_ts, results

    def process(self, ks: KeyState, event: Any, ts: int, cache: list | None = None) -> list[Match]:
        """Feeds one event; returns the matches it completes (after the skip strategy).
        ``cache``: the event's condition results by slot (from :meth:`screen`; None: none
        known yet)."""
        p = self.p
        ev = self._eval
        if cache is None:
            cache = self._blank[:]  # simple condition results for this event, by slot
        eid = ks.next_eid  # (ids count a key's events: the matches' order, skip strategies)
        ks.next_eid = eid + 1
        if p.skippable and ks.partials:
            # Most events of a stream concern no partial match of their key: if the event
            # matches none of the conditions the partial matches (and a start) look at, it
            # changes nothing, and the per-partial-match work below is skipped. A condition
            # that raises here is left to the work below, which raises only if it needs it.
            watch = ks.watch
            if watch < 0:
                watch = ks.watch = p.watch_of(ks.partials)
            try:
                for slot, simple in p.watching(watch):
                    r = cache[slot]
                    if r is None:
                        r = cache[slot] = bool(simple(event))
                    if r:
                        break
                else:
                    return []
            except Exception:
                pass
        stages = p.stages
        hot = p.hot
        within = p.within_ms
        passed = p.passed

        watch = ks.watch
        new: list[PM] = []
        completed: list[Node] = []  # last nodes of completed matches
        pending_done: list[Node] = []  # ending not_next resolved into a match
        earliest: int | None = None

        for pm in ks.partials:
            j, taken, prev, start, start_eid, targets, fresh = pm
            alive: list[int] = []
            for t in targets:
                if t == FINAL:
                    kind, chk = p.final_guard  # type: ignore[misc]
                    r = cache[chk.slot] if chk.slot >= 0 else None
                    if r is None:
                        r = ev(chk, event, prev, cache)
                    if r:
                        continue  # the forbidden event came: the partial match dies
                    if kind is _NOT_NEXT:
                        pending_done.append(prev)  # the next event is not the forbidden one
                        continue
                    alive.append(t)
                    continue
                slot, chk, until, inner, entry, rows, cap, full = hot[t]
                if t != j:
                    dead = False
                    for kind, guard in passed[j][t]:
                        if kind is _NOT_FOLLOWED or fresh:
                            r = cache[guard.slot] if guard.slot >= 0 else None
                            if r is None:
                                r = ev(guard, event, prev, cache)
                            if r:
                                dead = True
                                break
                    if not dead and fresh and stages[j].greedy:
                        loop = stages[j].check
                        r = cache[loop.slot] if loop.slot >= 0 else None
                        dead = ev(loop, event, prev, cache) if r is None else r
                    if dead:
                        continue
                    contiguity = entry
                    count = 1
                else:
                    if until is not None:
                        r = cache[until.slot] if until.slot >= 0 else None
                        if r is None:
                            r = ev(until, event, prev, cache)
                        if r:
                            continue
                    contiguity = inner
                    count = taken + 1
                ok = cache[slot] if slot >= 0 else None
                if ok is None:
                    ok = ev(chk, event, prev, cache)
                if ok and (within is None or ts - start < within):
                    node: Node = (t, eid, event, ts, prev)
                    if count < len(rows):
                        tg = rows[count]
                    else:
                        tg = full if count == cap else rows[-1]
                    if tg.complete:
                        completed.append(node)
                    if tg.targets:
                        new.append(
                            _new_tuple(PM, (t, count, node, start, start_eid, tg.targets, True))
                        )
                        watch |= tg.watch
                        if earliest is None or start < earliest:
                            earliest = start
                    if contiguity is not _ANY:
                        continue
                elif contiguity is _STRICT:
                    continue
                alive.append(t)
            if len(alive) == len(targets) and not fresh:
                new.append(pm)  # unchanged
            elif alive:
                new.append(_new_tuple(PM, (j, taken, prev, start, start_eid, tuple(alive), False)))
            else:
                continue
            if earliest is None or start < earliest:
                earliest = start
        for t in p.start_targets.targets:
            if t == FINAL:
                continue
            slot, chk, _until, _inner, _entry, rows, _cap, _full = hot[t]
            ok = cache[slot] if slot >= 0 else None
            if ok is None:
                ok = ev(chk, event, None, cache)
            if ok:
                node = (t, eid, event, ts, None)
                tg = rows[1]
                if tg.complete:
                    completed.append(node)
                if tg.targets:
                    new.append(_new_tuple(PM, (t, 1, node, ts, eid, tg.targets, True)))
                    watch |= tg.watch
                    if earliest is None or ts < earliest:
                        earliest = ts
        ks.partials = new
        ks.earliest = earliest
        ks.watch = (watch if watch >= 0 else -1) if new else 0
        if not completed and not pending_done:
            return []
        matches = [_new_tuple(Match, (chain(n),)) for n in completed]
        if pending_done:
            matches += [_new_tuple(Match, (chain(n),)) for n in pending_done]
        return self._skip(ks, matches)

    # -- time -------------------------------------------------------------------------------------

    def advance(self, ks: KeyState, t: int) -> tuple[Sequence[Match], Sequence[tuple[Match, int]]]:
        """NFA time moves to ``t``: returns the pending ``not_followed_by`` matches released
        (record timestamp ``t``) and the timed-out partial matches with their timestamps."""
        within = self.p.within_ms
        earliest = ks.earliest
        if within is None or earliest is None or t - earliest < within:
            return _NOTHING, _NOTHING
        fg = self.p.final_guard
        releases = fg is not None and fg.contiguity is _NOT_FOLLOWED
        keep: list[PM] = []
        released: list[Match] = []
        timed_out: list[tuple[Match, int]] = []
        earliest = None
        for pm in ks.partials:
            start = pm.start_ts
            if t - start >= within:
                m = _new_tuple(Match, (chain(pm.node),))
                if releases and FINAL in pm.targets:
                    released.append(m)
                else:
                    timed_out.append((m, start + within))
            else:
                keep.append(pm)
                if earliest is None or start < earliest:
                    earliest = start
        ks.partials = keep
        ks.earliest = earliest
        if not keep:
            ks.watch = 0
        return (self._skip(ks, released) if released else released), timed_out

    # -- after-match skip -------------------------------------------------------------------------

    def _skip(self, ks: KeyState, matches: list[Match]) -> list[Match]:
        if len(matches) > 1:
            matches.sort(key=_eids)
        kind = self.p.skip.kind
        if kind is SkipKind.NO_SKIP or not matches:
            return matches
        below = -1  # prune start ids < below
        out = []
        for m in matches:
            if m.start_eid() < below:
                continue
            out.append(m)
            below = max(below, self._pruning_bound(m))
        if below > -1:
            kept = []
            earliest = None
            for pm in ks.partials:
                if pm.start_eid >= below:
                    kept.append(pm)
                    if earliest is None or pm.start_ts < earliest:
                        earliest = pm.start_ts
            ks.partials = kept
            ks.earliest = earliest
        return out

    def _pruning_bound(self, m: Match) -> int:
        """Partial matches that started before the returned event id are discarded."""
        kind = self.p.skip.kind
        if kind is SkipKind.SKIP_TO_NEXT:
            return m.events[0][EID] + 1  # type: ignore[no-any-return]
        if kind is SkipKind.SKIP_PAST_LAST_EVENT:
            return m.events[-1][EID] + 1  # type: ignore[no-any-return]
        stage = self.p.skip_stage
        ids = [n[EID] for n in m.events if n[STAGE] == stage]
        if not ids:
            if self.p.skip.throw_on_miss:
                raise SkipToMissingStageError(
                    f"pattern {self.p.description}: skip strategy {kind.value}"
                    f"({self.p.skip.pattern_name!r}) found no event of that stage in the match "
                    f"{self.as_dict(m)!r} (throw_exception_on_miss is set)"
                )
            return -1
        return ids[0] if kind is SkipKind.SKIP_TO_FIRST else ids[-1]  # type: ignore[no-any-return]


def _eids(m: Match) -> list[int]:
    return [n[EID] for n in m.events]


class SkipToMissingStageError(MalformedPatternError):
    """skip_to_first/last(name) with ``throw_exception_on_miss`` met a match without ``name``."""
