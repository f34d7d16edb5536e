"""Internal: the compiled pattern and the NFA that runs it over one key's events.

The NFA needs no Ray and no operator: ``process(state, event, ts)`` and ``advance(state, t)`` work
on a key's :class:`KeyState` and :class:`~raystream.operators.cep.buffer.SharedBuffer` and return
what to emit. The operator (``operator.py``) decides when to call them (event-time order,
watermarks, processing time).

A partial match (``PM``) is the stage ``j`` its last event was taken into, how many events that
stage holds (``count``), the buffer node of that event, the start timestamp and event id, and its
*targets*: the stages its next event may go to (``j`` itself while the loop is not full; later
stages once ``j`` has enough, passing over optional ones; ``FINAL`` for a pending ending
negation). An event that arrives is offered to every target:

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from raystream.operators.cep.buffer import SharedBuffer
from raystream.operators.cep.pattern import (
    AfterMatchSkipStrategy,
    Cond,
    Contiguity,
    MalformedPatternError,
    Pattern,
    SkipKind,
    validate,
)

FINAL = -1  # the target of a pending ending negation


class ConditionError(Exception):
    """A user condition raised; the operator wraps it naming pattern, stage and record."""

    def __init__(self, stage: str, kind: str, event: Any, cause: BaseException):
        super().__init__(f"{kind} of stage {stage!r} raised {type(cause).__name__}: {cause}")
        self.stage = stage
        self.kind = kind
        self.event = event
        self.cause = cause


@dataclass
class CStage:
    index: int
    name: str
    cond: Cond
    until: Cond | None
    min_count: int
    max_count: int | None
    optional: bool
    greedy: bool
    inner: Contiguity
    entry: Contiguity
    #: NOT stages right before this stage: (kind, condition, name)
    guards: list[tuple[Contiguity, Cond, str]] = field(default_factory=list)


class Targets(NamedTuple):
    targets: tuple[int, ...]
    complete: bool


class CompiledPattern:
    """A validated pattern in the form the NFA runs; picklable (it travels with the operator)."""

    def __init__(self, pattern: Pattern):
        validate(pattern)
        self.description = pattern.describe()
        self.within_ms = pattern.within_ms
        self.skip: AfterMatchSkipStrategy = pattern.skip_strategy
        self.stages: list[CStage] = []
        guards: list[tuple[Contiguity, Cond, str]] = []
        for s in pattern.stages:
            if s.negative:
                assert s.contiguity is not None
                guards.append((s.contiguity, s.condition(), s.name))
                continue
            entry = s.contiguity if s.contiguity is not None else Contiguity.RELAXED
            if guards and s.contiguity is not None:
                entry = s.contiguity
            self.stages.append(
                CStage(
                    index=len(self.stages),
                    name=s.name,
                    cond=s.condition(),
                    until=s.until,
                    min_count=s.min_count,
                    max_count=s.max_count,
                    optional=s.optional,
                    greedy=s.greedy,
                    inner=s.inner,
                    entry=entry,
                    guards=guards,
                )
            )
            guards = []
        self.final_guard = guards[0] if guards else None
        self.names = [s.name for s in self.stages]
        self.skip_stage: int | None = None
        if self.skip.pattern_name is not None:
            if self.skip.pattern_name not in self.names:
                raise MalformedPatternError(
                    f"skip strategy {self.skip.kind.value}({self.skip.pattern_name!r}): no "
                    f"positive stage of that name in {self.description}"
                )
            self.skip_stage = self.names.index(self.skip.pattern_name)
        self.start_targets = self._following(-1)
        self._targets: dict[tuple[int, int], Targets] = {}
        # guards passed when going from stage j to stage t > j
        self._passed: dict[tuple[int, int], list[tuple[Contiguity, Cond, str]]] = {}
        n = len(self.stages)
        for j in range(n):
            for t in range(j + 1, n):
                self._passed[(j, t)] = [
                    g for k in range(j + 1, t + 1) for g in self.stages[k].guards
                ]

    def _following(self, j: int) -> Targets:
        """Targets after stage ``j`` is satisfied: later stages up to the first mandatory one."""
        out = []
        for k in range(j + 1, len(self.stages)):
            out.append(k)
            if not self.stages[k].optional:
                return Targets(tuple(out), False)
        if self.final_guard is not None:
            return Targets((*out, FINAL), False)
        return Targets(tuple(out), True)

    def targets(self, j: int, count: int) -> Targets:
        s = self.stages[j]
        ckey = (j, count if s.max_count is not None else min(count, s.min_count))
        cached = self._targets.get(ckey)
        if cached is not None:
            return cached
        inner = (j,) if s.max_count is None or count < s.max_count else ()
        if count >= s.min_count:
            after = self._following(j)
            result = Targets(inner + after.targets, after.complete)
        else:
            result = Targets(inner, False)
        self._targets[ckey] = result
        return result

    def passed_guards(self, j: int, t: int) -> list[tuple[Contiguity, Cond, str]]:
        return self._passed[(j, t)]


class PM(NamedTuple):
    """A partial match (see the module docstring)."""

    stage: int
    taken: int  # events in that stage so far
    node: int
    start_ts: int
    start_eid: int
    targets: tuple[int, ...]
    fresh: bool  # no event processed since its last take


class KeyState:
    """What the NFA keeps per key besides the buffer: live partial matches and id counters."""

    __slots__ = ("partials", "next_eid", "next_nid")

    def __init__(self) -> None:
        self.partials: list[PM] = []
        self.next_eid = 0
        self.next_nid = 0

    def __getstate__(self) -> tuple:
        return ([tuple(p) for p in self.partials], self.next_eid, self.next_nid)

    def __setstate__(self, state: tuple) -> None:
        partials, self.next_eid, self.next_nid = state
        self.partials = [PM(*p) for p in partials]


class Match(NamedTuple):
    events: list[tuple[int, int, Any, int]]  # (stage, event id, event, ts)

    def start_eid(self) -> int:
        return self.events[0][1]


class _Ctx:
    """``ctx`` of iterative conditions: the events the partial match has so far."""

    __slots__ = ("buf", "node", "names")

    def __init__(self, buf: SharedBuffer, node: int | None, names: list[str]):
        self.buf = buf
        self.node = node
        self.names = names

    def get_events_for_pattern(self, name: str) -> list:
        if name not in self.names:
            raise KeyError(f"no stage {name!r} in the pattern (stages: {self.names})")
        return self.buf.events_of_stage(self.node, self.names.index(name))


class NFA:
    """Runs a :class:`CompiledPattern` for one key at a time."""

    def __init__(self, compiled: CompiledPattern):
        self.p = compiled

    def as_dict(self, match: Match) -> dict[str, list]:
        """The match as Flink gives it: stage name -> events, in pattern order."""
        out: dict[str, list] = {}
        names = self.p.names
        for stage, _eid, event, _ts in match.events:
            out.setdefault(names[stage], []).append(event)
        return out

    # -- conditions -------------------------------------------------------------------------------

    def _check(self, cond: Cond, stage: str, kind: str, event: Any, ctx: Any) -> bool:
        try:
            return cond(event, ctx)
        except Exception as exc:
            raise ConditionError(stage, kind, event, exc) from exc

    # -- events -----------------------------------------------------------------------------------

    def process(
        self, ks: KeyState, buf: SharedBuffer, event: Any, ts: int
    ) -> tuple[list[Match], bool]:
        """Feeds one event; returns the matches it completes (after the skip strategy) and
        whether it started a new partial match (the operator then registers a timeout timer)."""
        p = self.p
        stages = p.stages
        names = p.names
        within = p.within_ms
        eid = ks.next_eid
        ks.next_eid = eid + 1
        check = self._check
        simple: dict[tuple[str, str], bool] = {}  # results of simple conditions for this event

        def cond_of(kind: str, stage: str, cond: Cond, node: int | None) -> bool:
            if cond.iterative:
                return check(cond, stage, kind, event, _Ctx(buf, node, names))
            k = (kind, stage)
            r = simple.get(k)
            if r is None:
                r = simple[k] = check(cond, stage, kind, event, None)
            return r

        new: list[PM] = []
        completed: list[int] = []  # nodes of completed matches (one reference each)
        pending_done: list[PM] = []  # PMs whose ending not_next resolved into a match

        def take(prev: PM | None, t: int) -> None:
            nid = ks.next_nid
            ks.next_nid = nid + 1
            if prev is None:
                count, start_ts, start_eid, prev_node = 1, ts, eid, None
            else:
                count = prev.taken + 1 if t == prev.stage else 1
                start_ts, start_eid, prev_node = prev.start_ts, prev.start_eid, prev.node
            buf.add(eid, event, ts, t, prev_node, nid)
            tg = p.targets(t, count)
            if tg.complete:
                buf.retain(nid)
                completed.append(nid)
            if tg.targets:
                buf.retain(nid)
                new.append(PM(t, count, nid, start_ts, start_eid, tg.targets, True))
            elif not tg.complete:  # cannot happen: a stage always leads somewhere
                buf.retain(nid)
                buf.release(nid)

        started = False
        for pm in ks.partials:
            j = pm.stage
            alive: list[int] = []
            for t in pm.targets:
                if t == FINAL:
                    kind, ncond, nname = p.final_guard  # type: ignore[misc]
                    if cond_of(_COND, nname, ncond, pm.node):
                        continue  # the forbidden event came: the partial match dies
                    if kind is Contiguity.NOT_NEXT:
                        buf.retain(pm.node)  # the next event is not the forbidden one: a match
                        pending_done.append(pm)
                        continue
                    alive.append(t)
                    continue
                st = stages[t]
                if t != j:
                    dead = False
                    for kind, gcond, gname in p.passed_guards(j, t):
                        if (kind is Contiguity.NOT_FOLLOWED or pm.fresh) and cond_of(
                            _COND, gname, gcond, pm.node
                        ):
                            dead = True
                            break
                    if not dead and pm.fresh and stages[j].greedy:
                        dead = cond_of(_COND, names[j], stages[j].cond, pm.node)
                    if dead:
                        continue
                    contiguity = st.entry
                else:
                    if st.until is not None and cond_of(_UNTIL, st.name, st.until, pm.node):
                        continue
                    contiguity = st.inner
                ok = cond_of(_COND, st.name, st.cond, pm.node) and (
                    within is None or ts - pm.start_ts < within
                )
                if ok:
                    take(pm, t)
                if contiguity is Contiguity.STRICT or (contiguity is Contiguity.RELAXED and ok):
                    continue
                alive.append(t)
            if alive:
                new.append(pm._replace(targets=tuple(alive), fresh=False))
            else:
                buf.release(pm.node)
        for t in p.start_targets.targets:
            if t != FINAL and cond_of(_COND, names[t], stages[t].cond, None):
                take(None, t)
                started = True
        matches = [Match(buf.chain(nid)) for nid in completed]
        for pm in pending_done:
            matches.append(Match(buf.chain(pm.node)))
        for nid in completed:
            buf.release(nid)
        for pm in pending_done:
            buf.release(pm.node)
        ks.partials = new
        return self._skip(ks, buf, matches), started and within is not None

    # -- time -------------------------------------------------------------------------------------

    def advance(
        self, ks: KeyState, buf: SharedBuffer, t: int
    ) -> tuple[list[Match], list[tuple[Match, int]]]:
        """NFA time moves to ``t``: returns the pending ``not_followed_by`` matches released
        (record timestamp ``t``) and the timed-out partial matches with their timestamps."""
        within = self.p.within_ms
        if within is None or not ks.partials:
            return [], []
        keep: list[PM] = []
        released: list[Match] = []
        timed_out: list[tuple[Match, int]] = []
        for pm in ks.partials:
            if t - pm.start_ts >= within:
                m = Match(buf.chain(pm.node))
                if FINAL in pm.targets and self.p.final_guard[0] is Contiguity.NOT_FOLLOWED:  # type: ignore[index]
                    released.append(m)
                else:
                    timed_out.append((m, pm.start_ts + within))
                buf.release(pm.node)
            else:
                keep.append(pm)
        ks.partials = keep
        return (self._skip(ks, buf, released) if released else []), timed_out

    # -- after-match skip -------------------------------------------------------------------------

    def _skip(self, ks: KeyState, buf: SharedBuffer, matches: list[Match]) -> list[Match]:
        if not matches:
            return matches
        matches.sort(key=lambda m: [e[1] for e in m.events])
        kind = self.p.skip.kind
        if kind is SkipKind.NO_SKIP:
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
            for pm in ks.partials:
                if pm.start_eid < below:
                    buf.release(pm.node)
                else:
                    kept.append(pm)
            ks.partials = kept
        return out

    def _pruning_bound(self, m: Match) -> int:
        """Partial matches that started before the returned event id are discarded."""
        kind = self.p.skip.kind
        if kind is SkipKind.SKIP_TO_NEXT:
            return m.events[0][1] + 1
        if kind is SkipKind.SKIP_PAST_LAST_EVENT:
            return m.events[-1][1] + 1
        stage = self.p.skip_stage
        ids = [eid for st, eid, _e, _t in m.events if st == stage]
        if not ids:
            if self.p.skip.throw_on_miss:
                raise SkipToMissingStageError(
                    f"pattern {self.p.description}: skip strategy {kind.value}"
                    f"({self.p.skip.pattern_name!r}) found no event of that stage in the match "
                    f"{self.as_dict(m)!r} (throw_exception_on_miss is set)"
                )
            return -1
        return ids[0] if kind is SkipKind.SKIP_TO_FIRST else ids[-1]


class SkipToMissingStageError(MalformedPatternError):
    """skip_to_first/last(name) with ``throw_exception_on_miss`` met a match without ``name``."""


_COND = "the condition"
_UNTIL = "the until condition"
