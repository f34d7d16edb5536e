"""Every example runs and gives the result an independent computation expects."""

from __future__ import annotations

import heapq
from collections import Counter

import pytest

from examples import (
    dedup_with_ttl,
    order_payment_matching,
    page_views_per_minute,
    profile_enrichment,
    sliding_counts,
    top_k_per_category,
)

pytestmark = pytest.mark.usefixtures("ray_session")


def test_page_views_per_minute():
    events = page_views_per_minute.click_stream(n=1500)
    expected = Counter((e["user"], e["ts"] - e["ts"] % 60_000) for e in events)
    got = page_views_per_minute.views_per_minute(events)
    assert Counter({(u, start): n for u, start, n in got}) == expected


def test_top_k_per_category():
    events = top_k_per_category.sales(n=1500)
    counts = Counter((e["category"], e["ts"] - e["ts"] % 10_000, e["item"]) for e in events)
    per_window: dict = {}
    for (cat, start, item), n in counts.items():
        per_window.setdefault((cat, start), []).append((n, item))
    expected = sorted(
        (cat, start, [(item, n) for n, item in heapq.nlargest(3, items)])
        for (cat, start), items in per_window.items()
    )
    assert top_k_per_category.top_items(events) == expected


def test_order_payment_matching():
    matched, unmatched = order_payment_matching.match(*order_payment_matching.sample())
    assert [m[1] for m in matched] == [1, 2, 4, 5, 6, 8, 10]
    assert [u[1] for u in unmatched] == [3, 7, 9]


def test_profile_enrichment_buffers_until_the_profile_arrives():
    events, profiles = profile_enrichment.sample()
    got = profile_enrichment.enrich(events, profiles)
    by_user = {p["user"]: p for p in profiles}
    assert len(got) == len(events)
    for e in got:
        assert (
            e["country"] == by_user[e["user"]]["country"]
            and e["tier"] == by_user[e["user"]]["tier"]
        )


def test_sliding_counts():
    events = sliding_counts.readings(n=800)
    expected: Counter = Counter()
    for e in events:
        start = e["ts"] - e["ts"] % 60_000
        while start > e["ts"] - 300_000:
            expected[(e["sensor"], start + 300_000)] += 1
            start -= 60_000
    got = sliding_counts.sliding_counts(events)
    assert {(s, end): n for s, end, n in got} == dict(expected)


def test_dedup_with_event_time_ttl():
    got = dedup_with_ttl.dedup(dedup_with_ttl.sample())
    minute = 60_000
    assert [(e["id"], e["ts"] // minute) for e in got] == [
        ("a", 0),
        ("b", 1),
        ("b", 90),
        ("a", 200),
    ]


def test_failed_logins():
    from examples import failed_logins

    events = failed_logins.login_events(n=600)
    # independent: per user, each run of three consecutive failures (in timestamp order,
    # successes in between do not break it) whose first and last are < 5 minutes apart
    per_user: dict = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        if not e["success"]:
            per_user.setdefault(e["user"], []).append(e["ts"])
    expected = sorted(
        ("alert", user, ts[i], ts[i + 2])
        for user, ts in per_user.items()
        for i in range(len(ts) - 2)
        if ts[i + 2] - ts[i] < failed_logins.WINDOW_MS
    )
    assert len(expected) >= 5
    assert failed_logins.alerts(events) == expected
