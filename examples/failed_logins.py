"""Complex event processing: alert on 3 failed logins of one user within 5 minutes.

The seed's Flink CEP example, in raystream:

    Pattern.begin("start").where(failed).times(3).within(Time.minutes(5))

Login events arrive slightly out of order; CEP buffers each user's events until the watermark
passes them and matches them in timestamp order. A match is three consecutive failed logins of
a user (successful logins in between are skipped: ``times`` has relaxed contiguity), the first
and the last less than five minutes apart.

    python examples/failed_logins.py
"""

from __future__ import annotations

import random

from raystream import StreamExecutionEnvironment, Time, WatermarkStrategy
from raystream.cep import CEP, Pattern, SimpleCondition
from raystream.operators import CollectionSource

WINDOW_MS = Time.minutes(5)


class Failed(SimpleCondition):
    def filter(self, value):
        return not value["success"]


def to_alert(match: dict) -> tuple:
    attempts = match["start"]
    return ("alert", attempts[0]["user"], attempts[0]["ts"], attempts[-1]["ts"])


def login_events(n: int = 2000, users: int = 40, seed: int = 7) -> list[dict]:
    """Logins over about ten hours, two users trying passwords often; arrival order is
    shuffled within 20 seconds."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        suspicious = rng.random() < 0.3  # two users try passwords much more often
        user = rng.choice(("user3", "user17")) if suspicious else f"user{rng.randrange(users)}"
        events.append(
            {
                "user": user,
                "success": rng.random() > (0.7 if suspicious else 0.15),
                "ts": i * 18_000 + rng.randrange(18_000),
            }
        )
    events.sort(key=lambda e: e["ts"] + rng.randrange(20_000))
    return events


def alerts(events: list[dict], parallelism: int = 2) -> list[tuple]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    ws = WatermarkStrategy.for_bounded_out_of_orderness(Time.seconds(20)).with_timestamp_assigner(
        lambda e: e["ts"]
    )
    logins = env.from_source(CollectionSource(events), ws, "logins").key_by(lambda e: e["user"])
    pattern = Pattern.begin("start").where(Failed()).times(3).within(WINDOW_MS)
    return sorted(
        CEP.pattern(logins, pattern).select(to_alert).execute_and_collect("failed logins")
    )


if __name__ == "__main__":
    found = alerts(login_events())
    for a in found[:10]:
        print(a)
    print(f"{len(found)} alerts")
