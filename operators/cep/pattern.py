"""Internal: the Pattern API (Flink CEP's ``Pattern`` in Python spelling) and its validation.

A :class:`Pattern` is a sequence of stages. ``begin``/``next``/``followed_by``/``followed_by_any``
add a positive stage, ``not_next``/``not_followed_by`` a negative one; ``where``/``or_``/
``until``/``subtype`` and the quantifiers change the last stage. Malformed patterns raise
:class:`MalformedPatternError` when they are built, naming the stage (Flink's rules). The
compiled form the NFA runs is :mod:`raystream.operators.cep.compiled`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from raystream.core.time import Duration, to_millis
from raystream.errors import GraphError


class MalformedPatternError(GraphError):
    """A CEP pattern breaks one of Flink's pattern rules; raised when it is built."""


class Contiguity(enum.Enum):
    """How an event may follow the previous one of a match."""

    STRICT = "strict"  # next / consecutive(): the very next event
    RELAXED = "relaxed"  # followed_by / default loops: skip till the next match
    ANY = "any"  # followed_by_any / allow_combinations(): skip till any match
    NOT_NEXT = "not_next"
    NOT_FOLLOWED = "not_followed_by"


class WithinType(enum.Enum):
    """What ``within`` measures: first to last event of the match (default), or the previous
    event to the current one of the stage it is called on."""

    FIRST_AND_LAST = "first_and_last"
    PREVIOUS_AND_CURRENT = "previous_and_current"


# -- conditions ---------------------------------------------------------------------------------


class Condition:
    """Base of the condition classes; ``is_iterative`` says whether it reads the match so far."""

    is_iterative = False


class SimpleCondition(Condition):
    """A condition on the event alone: override ``filter(value) -> bool``."""

    def filter(self, value: Any) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must override filter(value)")


class IterativeCondition(Condition):
    """A condition that can read the events already accepted for the match: override
    ``filter(value, ctx) -> bool``; ``ctx.get_events_for_pattern(name)`` lists them."""

    is_iterative = True

    def filter(self, value: Any, ctx: Any) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must override filter(value, ctx)")


@dataclass(frozen=True)
class Cond:
    """A compiled condition tree: ``op`` is "leaf", "and", "or" or "type"."""

    op: str
    fn: Any = None
    left: Cond | None = None
    right: Cond | None = None
    iterative: bool = False

    def __call__(self, value: Any, ctx: Any) -> bool:
        op = self.op
        if op == "leaf":
            fn = self.fn
            if self.iterative:
                return bool(fn(value, ctx))
            return bool(fn(value))
        if op == "and":
            return self.left(value, ctx) and self.right(value, ctx)  # type: ignore[misc]
        if op == "or":
            return self.left(value, ctx) or self.right(value, ctx)  # type: ignore[misc]
        return isinstance(value, self.fn)  # "type"


def leaf(condition: Any, what: str, stage: str) -> Cond:
    if isinstance(condition, IterativeCondition):
        return Cond("leaf", condition.filter, iterative=True)
    if isinstance(condition, SimpleCondition):
        return Cond("leaf", condition.filter)
    if isinstance(condition, type) or not callable(condition):
        raise MalformedPatternError(
            f"stage {stage!r}: {what} expects a callable(value) -> bool, a SimpleCondition or an "
            f"IterativeCondition, got {condition!r}"
        )
    return Cond("leaf", condition)


def _and(a: Cond | None, b: Cond) -> Cond:
    return b if a is None else Cond("and", left=a, right=b, iterative=a.iterative or b.iterative)


# -- skip strategies ----------------------------------------------------------------------------


class SkipKind(enum.Enum):
    NO_SKIP = "no_skip"
    SKIP_TO_NEXT = "skip_to_next"
    SKIP_PAST_LAST_EVENT = "skip_past_last_event"
    SKIP_TO_FIRST = "skip_to_first"
    SKIP_TO_LAST = "skip_to_last"


@dataclass(frozen=True)
class AfterMatchSkipStrategy:
    """Which partial matches are discarded after a match is emitted (SEMANTICS §8.2)."""

    kind: SkipKind = SkipKind.NO_SKIP
    pattern_name: str | None = None
    throw_on_miss: bool = False

    @staticmethod
    def no_skip() -> AfterMatchSkipStrategy:
        return AfterMatchSkipStrategy(SkipKind.NO_SKIP)

    @staticmethod
    def skip_to_next() -> AfterMatchSkipStrategy:
        return AfterMatchSkipStrategy(SkipKind.SKIP_TO_NEXT)

    @staticmethod
    def skip_past_last_event() -> AfterMatchSkipStrategy:
        return AfterMatchSkipStrategy(SkipKind.SKIP_PAST_LAST_EVENT)

    @staticmethod
    def skip_to_first(pattern_name: str) -> AfterMatchSkipStrategy:
        return AfterMatchSkipStrategy(SkipKind.SKIP_TO_FIRST, pattern_name)

    @staticmethod
    def skip_to_last(pattern_name: str) -> AfterMatchSkipStrategy:
        return AfterMatchSkipStrategy(SkipKind.SKIP_TO_LAST, pattern_name)

    def throw_exception_on_miss(self) -> AfterMatchSkipStrategy:
        """skip_to_first/last: raise when the named stage has no event in a match (instead of
        behaving as no_skip)."""
        return AfterMatchSkipStrategy(self.kind, self.pattern_name, True)


# -- stages -------------------------------------------------------------------------------------


@dataclass
class Stage:
    """One stage as the builder collects it."""

    name: str
    contiguity: Contiguity | None  # None: the first stage
    cond: Cond | None = None
    until: Cond | None = None
    min_count: int = 1
    max_count: int | None = 1  # None: unbounded
    looping: bool = False
    quantified: bool = False
    optional: bool = False
    greedy: bool = False
    inner: Contiguity = Contiguity.RELAXED
    inner_set: bool = False
    subtype: type | None = None
    within_ms: int | None = None  # PREVIOUS_AND_CURRENT on this stage
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def negative(self) -> bool:
        return self.contiguity in (Contiguity.NOT_NEXT, Contiguity.NOT_FOLLOWED)

    def condition(self) -> Cond:
        cond = self.cond
        if self.subtype is not None:
            cond = _and(Cond("type", self.subtype), cond) if cond else Cond("type", self.subtype)
        return cond if cond is not None else Cond("leaf", _always)

    def describe(self) -> str:
        return self.name


def _always(_value: Any) -> bool:
    return True


class Pattern:
    """A CEP pattern: ``Pattern.begin("a").where(...).followed_by("b")...``.

    Example:
        >>> p = Pattern.begin("fail").where(lambda e: e["ok"] is False).times(3).within(300_000)
        >>> [s.name for s in p.stages]
        ['fail']
    """

    def __init__(
        self,
        stages: list[Stage],
        skip_strategy: AfterMatchSkipStrategy,
        within_ms: int | None = None,
    ):
        self.stages = stages
        self.skip_strategy = skip_strategy
        self.within_ms = within_ms

    # -- sequence -------------------------------------------------------------------------------

    @staticmethod
    def begin(name: Any, skip_strategy: AfterMatchSkipStrategy | None = None) -> Pattern:
        _check_name(name, [])
        strategy = skip_strategy if skip_strategy is not None else AfterMatchSkipStrategy.no_skip()
        if not isinstance(strategy, AfterMatchSkipStrategy):
            raise MalformedPatternError(
                f"stage {name!r}: skip_strategy must be an AfterMatchSkipStrategy, got {strategy!r}"
            )
        return Pattern([Stage(name, None)], strategy)

    def _append(self, name: Any, contiguity: Contiguity) -> Pattern:
        _check_name(name, self.stages)
        last = self.stages[-1]
        if contiguity in (Contiguity.NOT_NEXT, Contiguity.NOT_FOLLOWED) and last.optional:
            raise MalformedPatternError(
                f"stage {name!r}: a NOT stage ({contiguity.value}) cannot follow the optional "
                f"stage {last.name!r} (Flink's rule)"
            )
        if last.negative and contiguity in (Contiguity.NOT_NEXT, Contiguity.NOT_FOLLOWED):
            raise MalformedPatternError(
                f"stage {name!r}: two NOT stages in a row ({last.name!r}, {name!r}) are not "
                "supported by raystream; combine their conditions with or_()"
            )
        return Pattern([*self.stages, Stage(name, contiguity)], self.skip_strategy, self.within_ms)

    def next(self, name: Any) -> Pattern:
        return self._append(name, Contiguity.STRICT)

    def followed_by(self, name: Any) -> Pattern:
        return self._append(name, Contiguity.RELAXED)

    def followed_by_any(self, name: Any) -> Pattern:
        return self._append(name, Contiguity.ANY)

    def not_next(self, name: Any) -> Pattern:
        return self._append(name, Contiguity.NOT_NEXT)

    def not_followed_by(self, name: Any) -> Pattern:
        return self._append(name, Contiguity.NOT_FOLLOWED)

    # -- conditions -----------------------------------------------------------------------------

    @property
    def _last(self) -> Stage:
        return self.stages[-1]

    def where(self, condition: Any) -> Pattern:
        s = self._last
        s.cond = _and(s.cond, leaf(condition, "where()", s.name))
        return self

    def or_(self, condition: Any) -> Pattern:
        s = self._last
        c = leaf(condition, "or_()", s.name)
        s.cond = (
            c
            if s.cond is None
            else Cond("or", left=s.cond, right=c, iterative=s.cond.iterative or c.iterative)
        )
        return self

    def until(self, condition: Any) -> Pattern:
        s = self._last
        if not s.looping or s.max_count is not None:
            raise MalformedPatternError(
                f"stage {s.name!r}: until() applies to looping stages only "
                "(one_or_more() or times_or_more())"
            )
        if s.until is not None:
            raise MalformedPatternError(f"stage {s.name!r}: until() is already set")
        s.until = leaf(condition, "until()", s.name)
        return self

    def subtype(self, cls: type) -> Pattern:
        s = self._last
        if not isinstance(cls, type):
            raise MalformedPatternError(f"stage {s.name!r}: subtype() expects a class, got {cls!r}")
        s.subtype = cls
        return self

    # -- quantifiers ----------------------------------------------------------------------------

    def _quantify(self, what: str) -> Stage:
        s = self._last
        if s.negative:
            raise MalformedPatternError(
                f"stage {s.name!r}: {what} is not applicable to a NOT stage ({s.contiguity.value})"  # type: ignore[union-attr]
            )
        if s.quantified:
            raise MalformedPatternError(
                f"stage {s.name!r}: a quantifier is already applied ({what} after "
                f"{_describe_quantifier(s)})"
            )
        s.quantified = True
        s.looping = True
        return s

    def times(self, from_: int, to: int | None = None) -> Pattern:
        """Exactly ``from_`` events, or between ``from_`` and ``to`` (inclusive)."""
        lo, hi = (from_, from_) if to is None else (from_, to)
        s = self._last
        for v in (lo, hi):
            if isinstance(v, bool) or not isinstance(v, int):
                raise MalformedPatternError(f"stage {s.name!r}: times() expects ints, got {v!r}")
        if to is None and lo <= 0:
            raise MalformedPatternError(f"stage {s.name!r}: times({lo}) needs a count > 0")
        if lo < 0 or hi < lo or hi <= 0:
            raise MalformedPatternError(
                f"stage {s.name!r}: times({lo}, {hi}) needs 0 <= from <= to and to > 0"
            )
        s = self._quantify(f"times({lo}{'' if to is None else f', {hi}'})")
        if lo == 0:  # as Flink: times(0, n) is an optional times(1, n)
            lo, s.optional = 1, True
        s.min_count, s.max_count = lo, hi
        return self

    def times_or_more(self, times: int) -> Pattern:
        s = self._last
        if isinstance(times, bool) or not isinstance(times, int) or times < 0:
            raise MalformedPatternError(
                f"stage {s.name!r}: times_or_more() expects an int >= 0, got {times!r}"
            )
        s = self._quantify(f"times_or_more({times})")
        if times == 0:
            times, s.optional = 1, True
        s.min_count, s.max_count = times, None
        return self

    def one_or_more(self) -> Pattern:
        s = self._quantify("one_or_more()")
        s.min_count, s.max_count = 1, None
        return self

    def optional(self) -> Pattern:
        s = self._last
        if s.negative:
            raise MalformedPatternError(
                f"stage {s.name!r}: optional() is not applicable to a NOT stage"
            )
        s.optional = True
        return self

    def greedy(self) -> Pattern:
        s = self._last
        if not s.looping:
            raise MalformedPatternError(
                f"stage {s.name!r}: greedy() applies to looping stages only (times, "
                "one_or_more, times_or_more); call the quantifier first"
            )
        s.greedy = True
        return self

    def consecutive(self) -> Pattern:
        return self._inner(Contiguity.STRICT, "consecutive()")

    def allow_combinations(self) -> Pattern:
        return self._inner(Contiguity.ANY, "allow_combinations()")

    def _inner(self, contiguity: Contiguity, what: str) -> Pattern:
        s = self._last
        if not s.looping:
            raise MalformedPatternError(
                f"stage {s.name!r}: {what} applies to looping stages only (times, one_or_more, "
                "times_or_more); call the quantifier first"
            )
        if s.inner_set:
            raise MalformedPatternError(
                f"stage {s.name!r}: consecutive() and allow_combinations() exclude each other"
            )
        s.inner, s.inner_set = contiguity, True
        return self

    # -- time -----------------------------------------------------------------------------------

    def within(
        self, duration: Duration, within_type: WithinType = WithinType.FIRST_AND_LAST
    ) -> Pattern:
        s = self._last
        ms = to_millis(duration, f"within() of stage {s.name!r}")
        if ms <= 0:
            raise MalformedPatternError(
                f"stage {s.name!r}: within() needs a duration > 0, got {ms} ms"
            )
        if within_type is WithinType.PREVIOUS_AND_CURRENT:
            raise MalformedPatternError(
                f"stage {s.name!r}: within(..., WithinType.PREVIOUS_AND_CURRENT) is not "
                "implemented by raystream yet; use the default WithinType.FIRST_AND_LAST"
            )
        if not isinstance(within_type, WithinType):
            raise MalformedPatternError(
                f"stage {s.name!r}: within_type must be a WithinType, got {within_type!r}"
            )
        # several limits: the smallest wins (Flink)
        self.within_ms = ms if self.within_ms is None else min(self.within_ms, ms)
        return self

    def get_name(self) -> str:
        return self._last.name

    def describe(self) -> str:
        parts = []
        for s in self.stages:
            head = "begin" if s.contiguity is None else s.contiguity.value
            parts.append(f"{head}({s.name!r}){_describe_quantifier(s)}")
        return ".".join(parts)

    def __repr__(self) -> str:
        return f"Pattern({self.describe()})"


def _describe_quantifier(s: Stage) -> str:
    if not s.quantified:
        q = ""
    elif s.max_count is None:
        q = ".one_or_more()" if s.min_count == 1 else f".times_or_more({s.min_count})"
    elif s.min_count == s.max_count:
        q = f".times({s.min_count})"
    else:
        q = f".times({s.min_count}, {s.max_count})"
    return q + (".optional()" if s.optional else "") + (".greedy()" if s.greedy else "")


def _check_name(name: Any, stages: list[Stage]) -> None:
    if isinstance(name, Pattern):
        raise MalformedPatternError(
            "group patterns (a Pattern in place of a stage name) are not implemented by "
            "raystream yet"
        )
    if not isinstance(name, str) or not name:
        raise MalformedPatternError(f"a stage name must be a non-empty str, got {name!r}")
    if ":" in name:
        raise MalformedPatternError(f"stage {name!r}: a stage name may not contain ':'")
    if any(s.name == name for s in stages):
        raise MalformedPatternError(f"stage {name!r}: the name is already used in this pattern")


def validate(pattern: Pattern) -> None:
    """The rules that need the whole pattern; ``CEP.pattern`` calls it."""
    if not isinstance(pattern, Pattern):
        raise MalformedPatternError(f"expected a Pattern, got {pattern!r}")
    stages = pattern.stages
    last = stages[-1]
    if last.contiguity is Contiguity.NOT_FOLLOWED and pattern.within_ms is None:
        raise MalformedPatternError(
            f"stage {last.name!r}: a pattern may end with not_followed_by() only with within() "
            "(Flink's rule); hint: add .within(duration)"
        )
    if all(s.negative or s.optional for s in stages):
        raise MalformedPatternError(
            f"pattern {pattern.describe()}: every stage is optional or negative, so it would "
            "match nothing"
        )
    for i, s in enumerate(stages):
        if s.negative and i + 1 < len(stages) and stages[i + 1].optional:
            raise MalformedPatternError(
                f"stage {stages[i + 1].name!r}: an optional stage right after the NOT stage "
                f"{s.name!r} is not supported by raystream"
            )
    positives = [s for s in stages if not s.negative]
    if positives[-1].greedy and stages[-1] is positives[-1]:
        raise MalformedPatternError(
            f"stage {positives[-1].name!r}: greedy() on the last stage is not supported by "
            "raystream (it only changes where a loop hands over to the next stage)"
        )
    strategy = pattern.skip_strategy
    if strategy.kind in (SkipKind.SKIP_TO_FIRST, SkipKind.SKIP_TO_LAST):
        if not any(s.name == strategy.pattern_name and not s.negative for s in stages):
            raise MalformedPatternError(
                f"skip strategy {strategy.kind.value}({strategy.pattern_name!r}): the pattern "
                f"has no positive stage of that name ({pattern.describe()})"
            )
