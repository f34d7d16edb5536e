"""Complex event processing: Flink CEP's Pattern API in Python spelling.

    pattern = (
        Pattern.begin("fail").where(lambda e: not e["ok"]).times(3).within(Time.minutes(5))
    )
    alerts = CEP.pattern(logins.key_by(lambda e: e["user"]), pattern).select(to_alert)

See docs/cep.md for the mapping from Flink and the semantics.
"""

from raystream.api.cep import CEP, PatternStream
from raystream.operators.cep.functions import PatternProcessFunction, TimedOutPartialMatchHandler
from raystream.operators.cep.nfa import SkipToMissingStageError
from raystream.operators.cep.pattern import (
    AfterMatchSkipStrategy,
    IterativeCondition,
    MalformedPatternError,
    Pattern,
    SimpleCondition,
    WithinType,
)

__all__ = [
    "CEP",
    "PatternStream",
    "Pattern",
    "PatternProcessFunction",
    "TimedOutPartialMatchHandler",
    "SimpleCondition",
    "IterativeCondition",
    "AfterMatchSkipStrategy",
    "WithinType",
    "MalformedPatternError",
    "SkipToMissingStageError",
]
