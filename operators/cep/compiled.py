"""Internal: a pattern compiled into the form the NFA runs (``CompiledPattern``).

The positive stages with their contiguity, quantifier and the NOT stages before them (guards),
every condition as a :class:`Check` with a slot in the NFA's per-event cache, and what the NFA
looks up per event precomputed: the targets of a partial match per stage and count, the guards
passed between two stages, and which conditions a partial match looks at (bit masks over the
slots), for the pre-checks that let an event skip work it cannot change (``skippable``) or be
dropped on arrival (``droppable``). The NFA itself is :mod:`raystream.operators.cep.nfa`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from raystream.operators.cep.pattern import (
    AfterMatchSkipStrategy,
    Cond,
    Contiguity,
    MalformedPatternError,
    Pattern,
    validate,
)

if TYPE_CHECKING:
    from raystream.operators.cep.nfa import PM

FINAL = -1  # the target of a pending ending negation
NO_SLOT = -1  # iterative conditions depend on the partial match: never cached
COND = "the condition"
UNTIL = "the until condition"

_NOT_FOLLOWED = Contiguity.NOT_FOLLOWED


class Check(NamedTuple):
    """One condition as the NFA evaluates it: ``slot`` indexes the per-event cache of simple
    conditions (``NO_SLOT`` for iterative ones); ``stage`` and ``kind`` name it in errors;
    ``simple`` calls a simple condition on the event alone (None for iterative ones)."""

    cond: Cond
    slot: int
    stage: str
    kind: str
    simple: Any


def _call_simple(cond: Cond, value: Any) -> bool:
    return cond(value, None)


class Guard(NamedTuple):
    """A NOT stage right before a positive stage (or at the end of the pattern)."""

    contiguity: Contiguity  # NOT_NEXT or NOT_FOLLOWED
    check: Check


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
    check: Check  # ``cond`` as the NFA evaluates it
    #: NOT stages right before this stage
    guards: list[Guard] = field(default_factory=list)
    until_check: Check | None = None


class Targets(NamedTuple):
    targets: tuple[int, ...]
    complete: bool
    watch: int = 0  # see CompiledPattern (skippable patterns)


class CompiledPattern:
    """A validated pattern in the form the NFA runs; picklable (it travels with the operator)."""

    def __init__(self, pattern: Pattern):
        validate(pattern)
        self.description = pattern.describe()
        self.within_ms = pattern.within_ms
        self.skip: AfterMatchSkipStrategy = pattern.skip_strategy
        self.stages: list[CStage] = []
        self.num_slots = 0
        guards: list[Guard] = []
        for s in pattern.stages:
            if s.negative:
                assert s.contiguity is not None
                guards.append(Guard(s.contiguity, self._check(s.condition(), s.name, COND)))
                continue
            entry = s.contiguity if s.contiguity is not None else Contiguity.RELAXED
            cond = s.condition()
            self.stages.append(
                CStage(
                    index=len(self.stages),
                    name=s.name,
                    cond=cond,
                    until=s.until,
                    min_count=s.min_count,
                    max_count=s.max_count,
                    optional=s.optional,
                    greedy=s.greedy,
                    inner=s.inner,
                    entry=entry,
                    guards=guards,
                    check=self._check(cond, s.name, COND),
                    until_check=(
                        self._check(s.until, s.name, UNTIL) if s.until is not None else None
                    ),
                )
            )
            guards = []
        self.final_guard: Guard | None = guards[0] if guards else None
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
        n = len(self.stages)
        #: the targets of a partial match with c events in stage j: ``target_table[j][c]`` up
        #: to the stage's minimum count; above it the last row, except ``full_rows[j]`` at a
        #: bounded stage's maximum count ``caps[j]`` (-1: unbounded), so ``times(1, 10000)``
        #: needs two rows, not 10 001
        self.target_table: list[list[Targets]] = [
            [self._targets(j, c) for c in range(cs.min_count + 1)]
            for j, cs in enumerate(self.stages)
        ]
        self.caps = [cs.max_count if cs.max_count is not None else -1 for cs in self.stages]
        self.full_rows = [
            self._targets(j, cs.max_count) if cs.max_count is not None else rows[-1]
            for j, (cs, rows) in enumerate(zip(self.stages, self.target_table))
        ]
        #: guards passed when going from stage j to stage t > j: ``passed[j][t]``
        self.passed: list[list[list[Guard]]] = [
            [
                [g for k in range(j + 1, t + 1) for g in self.stages[k].guards] if t > j else []
                for t in range(n)
            ]
            for j in range(n)
        ]
        #: whether an event that matches none of the conditions a key's partial matches look at
        #: leaves them as they are (nothing to take, kill or complete): no strict contiguity,
        #: no not_next, no greedy loop, no iterative condition (see ``NFA.process``)
        self.skippable = (
            all(s.check.slot != NO_SLOT for s in self.stages)
            and all(s.until_check is None or s.until_check.slot != NO_SLOT for s in self.stages)
            and all(s.entry is not Contiguity.STRICT for s in self.stages[1:])
            and not any(
                s.inner is Contiguity.STRICT and (s.max_count is None or s.max_count > 1)
                for s in self.stages
            )
            and not any(s.greedy for s in self.stages)
            and all(
                g.contiguity is Contiguity.NOT_FOLLOWED and g.check.slot != NO_SLOT
                for g in [*(g for s in self.stages for g in s.guards), *self._final_guards()]
            )
        )
        # What a partial match looks at, as a bit mask of condition slots: a partial match
        # created by a take into stage j with count c has the targets of row c of j, and looks
        # at most at ``target_table[j][c].watch`` (fewer once targets died); a key's partial
        # matches at most at the union of those (``KeyState.watch``); starts at ``start_watch``.
        self.checks: list[Check] = [c for c in self._all_checks() if c.slot != NO_SLOT]
        self.start_watch = 0
        for t in self.start_targets.targets:
            if t != FINAL and self.stages[t].check.slot != NO_SLOT:
                self.start_watch |= 1 << self.stages[t].check.slot
        if self.skippable:
            self.target_table = [
                [row._replace(watch=self._watch(j, row.targets)) for row in rows]
                for j, rows in enumerate(self.target_table)
            ]
            self.full_rows = [
                row._replace(watch=self._watch(j, row.targets))
                for j, row in enumerate(self.full_rows)
            ]
        #: per stage, what ``NFA.process`` reads for a target (one tuple, one unpacking):
        #: condition slot and check, until check, inner and entry contiguity, target rows, cap
        #: and the row at the cap
        self.hot = [
            (s.check.slot, s.check, s.until_check, s.inner, s.entry, rows, cap, full)
            for s, rows, cap, full in zip(self.stages, self.target_table, self.caps, self.full_rows)
        ]
        self._watching: dict[int, tuple[tuple[int, Any], ...]] = {}
        #: whether an event that matches none of the pattern's conditions can be dropped on
        #: arrival: skippable, and no ending not_followed_by (whose matches carry the time of
        #: the event that released them)
        fg = self.final_guard
        self.droppable = self.skippable and (fg is None or fg.contiguity is not _NOT_FOLLOWED)
        self.all_simple = tuple((c.slot, c.simple) for c in self.checks)

    def _all_checks(self) -> list[Check]:
        out = [s.check for s in self.stages]
        out += [g.check for s in self.stages for g in s.guards]
        out += [s.until_check for s in self.stages if s.until_check is not None]
        return out + [g.check for g in self._final_guards()]

    def _final_guards(self) -> list[Guard]:
        return [self.final_guard] if self.final_guard is not None else []

    def _watch(self, j: int, targets: tuple[int, ...]) -> int:
        """The conditions a partial match in stage ``j`` with ``targets`` evaluates on an event
        (of a ``skippable`` pattern: no freshness-dependent guards), as a slot mask."""
        checks: list[Check] = []
        for t in targets:
            if t == FINAL:
                checks.append(self.final_guard.check)  # type: ignore[union-attr]
                continue
            st = self.stages[t]
            if t == j:
                if st.until_check is not None:
                    checks.append(st.until_check)
            else:
                checks += [g.check for g in self.passed[j][t]]
            checks.append(st.check)
        mask = 0
        for c in checks:
            mask |= 1 << c.slot
        return mask

    def watch_of(self, partials: list[PM]) -> int:
        """A slot mask covering what ``partials`` look at (their rows' masks: a superset)."""
        mask = 0
        for pm in partials:
            mask |= self.targets(pm.stage, pm.taken).watch
        return mask

    def watching(self, watch: int) -> tuple[tuple[int, Any], ...]:
        """``(slot, simple condition)`` of the conditions in ``watch`` and of the starts."""
        found = self._watching.get(watch)
        if found is None:
            mask = watch | self.start_watch
            found = self._watching[watch] = tuple(
                (c.slot, c.simple) for c in self.checks if mask >> c.slot & 1
            )
        return found

    def _check(self, cond: Cond, stage: str, kind: str) -> Check:
        if cond.iterative:
            return Check(cond, NO_SLOT, stage, kind, None)
        self.num_slots += 1
        simple = cond.fn if cond.op == "leaf" else functools.partial(_call_simple, cond)
        return Check(cond, self.num_slots - 1, stage, kind, simple)

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

    def _targets(self, j: int, count: int) -> Targets:
        s = self.stages[j]
        inner = (j,) if s.max_count is None or count < s.max_count else ()
        if count >= s.min_count:
            after = self._following(j)
            return Targets(inner + after.targets, after.complete)
        return Targets(inner, False)

    def targets(self, j: int, count: int) -> Targets:
        rows = self.target_table[j]
        if count < len(rows):
            return rows[count]
        return self.full_rows[j] if count == self.caps[j] else rows[-1]
