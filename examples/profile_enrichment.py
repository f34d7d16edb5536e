"""User-profile enrichment: user events joined with the latest profile of the user (connect).

Profiles are a changelog stream keyed by user; each event is enriched with whatever profile the
user has when the event is processed. Events of users without a profile yet are buffered in
state and emitted as soon as the profile arrives.

    python examples/profile_enrichment.py
"""

from __future__ import annotations

from raystream import (
    KeyedCoProcessFunction,
    ListStateDescriptor,
    StreamExecutionEnvironment,
    ValueStateDescriptor,
)


class Enrich(KeyedCoProcessFunction):
    def open(self, runtime_context):
        self.profile = runtime_context.get_state(ValueStateDescriptor("profile"))
        self.waiting = runtime_context.get_list_state(ListStateDescriptor("waiting"))

    def process_element1(self, event, ctx):
        profile = self.profile.value()
        if profile is None:
            self.waiting.add(event)
        else:
            yield {**event, "country": profile["country"], "tier": profile["tier"]}

    def process_element2(self, profile, ctx):
        self.profile.update(profile)
        for event in self.waiting.get():
            yield {**event, "country": profile["country"], "tier": profile["tier"]}
        self.waiting.clear()


def enrich(events: list[dict], profiles: list[dict], parallelism: int = 2) -> list[dict]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    enriched = (
        env.from_collection(events)
        .connect(env.from_collection(profiles))
        .key_by(lambda e: e["user"], lambda p: p["user"])
        .process(Enrich())
        .name("enrich")
    )
    return sorted(
        enriched.execute_and_collect("profile enrichment"), key=lambda e: (e["user"], e["action"])
    )


def sample() -> tuple[list[dict], list[dict]]:
    events = [{"user": f"u{i % 6}", "action": f"click-{i}"} for i in range(18)]
    profiles = [
        {"user": f"u{i}", "country": ["DE", "FR", "US"][i % 3], "tier": i % 2} for i in range(6)
    ]
    return events, profiles


if __name__ == "__main__":
    for e in enrich(*sample()):
        print(e)
