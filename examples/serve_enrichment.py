"""Enrich a stream of payments with a risk score from a Ray Serve deployment, called through its
deployment handle from async I/O.

    python -m pip install -e ".[ml]"        # ray[serve]
    python examples/serve_enrichment.py

A small Serve application (``RiskModel``, two replicas, batching requests on the server side)
is started on the local Ray with no HTTP proxy: the job reaches it only through its deployment
handle, which each subtask looks up once in ``open``. ``AsyncDataStream.unordered_wait`` keeps up
to ``capacity`` requests in flight per subtask on the task's event loop, so the replicas see
many concurrent requests and ``@serve.batch`` can group them. A payment the service does not
answer within the timeout goes to a dead-letter side output (it would fail the job, naming the
operator and the payment, without the policy).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from raystream import (
    AsyncDataStream,
    AsyncFunction,
    ErrorPolicy,
    OutputTag,
    StreamExecutionEnvironment,
)

APP = "risk"
DEPLOYMENT = "RiskModel"
TIMED_OUT = OutputTag("timed-out")
#: payments with this merchant make the service hang (to show timeouts)
SLOW_MERCHANT = "m-hang"


def risk_score(payment: dict) -> float:
    """The "model": a logistic score of amount and country, the same on both sides."""
    x = 0.002 * payment["amount"] + (1.5 if payment["country"] not in ("DE", "FR") else 0.0) - 3
    return round(1.0 / (1.0 + math.exp(-x)), 6)


def deployment() -> Any:
    """The Serve deployment (built on demand, so importing this module needs no ray[serve])."""
    from ray import serve

    # max_ongoing_requests above the batch size: Serve's default (5) would cap every batch at 5
    @serve.deployment(
        name=DEPLOYMENT, num_replicas=2, max_ongoing_requests=32, ray_actor_options={"num_cpus": 0}
    )
    class RiskModel:
        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
        async def score(self, payments: list[dict]) -> list[dict]:
            return [{"risk": risk_score(p), "served_in_batch_of": len(payments)} for p in payments]

        async def __call__(self, payment: dict) -> dict:
            if payment["merchant"] == SLOW_MERCHANT:
                await asyncio.sleep(3600)  # the caller's timeout cancels this request
            return await self.score(payment)  # type: ignore[no-any-return]

    return RiskModel


def start_app() -> None:
    """Starts the application on the connected Ray (local), without any HTTP listener."""
    from ray import serve

    serve.start(proxy_location="Disabled")
    serve.run(deployment().bind(), name=APP, route_prefix=None)


class ScoreWithServe(AsyncFunction):
    """Calls the deployment for each payment; one enriched payment per result."""

    def open(self, runtime_context: Any) -> None:
        from ray import serve

        self.handle = serve.get_deployment_handle(DEPLOYMENT, app_name=APP)

    async def async_invoke(self, payment: dict) -> list:
        answer = await self.handle.remote(payment)
        return [{**payment, **answer}]


def sample_payments(n: int) -> list[dict]:
    countries = ["DE", "FR", "US", "BR", "NG"]
    return [
        {"id": i, "amount": (i * 37) % 2000, "country": countries[i % 5], "merchant": f"m{i % 7}"}
        for i in range(n)
    ]


def enrich(
    payments: list[dict],
    parallelism: int = 2,
    capacity: int = 32,
    timeout_ms: int = 5_000,
    dead_letters: bool = True,
) -> tuple[list[dict], list]:
    """Runs the job against the running application; returns enriched payments and the dead
    letters of payments the service did not answer in time."""
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    scored = AsyncDataStream.unordered_wait(
        env.from_collection(payments), ScoreWithServe(), timeout_ms, capacity=capacity
    ).name("risk-score")
    if not dead_letters:
        return list(scored.execute_and_collect("serve-enrichment")), []
    scored = scored.set_error_policy(ErrorPolicy.dead_letter(TIMED_OUT))
    tagged = scored.map(lambda p: ("ok", p)).union(
        scored.get_side_output(TIMED_OUT).map(lambda d: ("timeout", d))
    )
    ok: list[dict] = []
    late: list = []
    for kind, value in tagged.execute_and_collect("serve-enrichment"):
        (ok if kind == "ok" else late).append(value)
    return ok, late


def main() -> None:
    import ray
    from ray import serve

    ray.init(include_dashboard=False)
    start_app()
    try:
        payments = sample_payments(500)
        payments.append({"id": 500, "amount": 10, "country": "DE", "merchant": SLOW_MERCHANT})
        ok, late = enrich(payments, timeout_ms=2_000)
        risky = sorted(ok, key=lambda p: -p["risk"])[:5]
        for p in risky:
            print(
                f"payment {p['id']:>4}: {p['amount']:>5} from {p['country']}  risk {p['risk']:.3f}"
            )
        batches = [p["served_in_batch_of"] for p in ok]
        print(f"{len(ok)} payments scored; Serve batched up to {max(batches)} requests per call")
        for d in late:
            print(f"no answer for payment {d.record['id']}: {d.exception_type}: {d.message}")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
