"""A job that reserves more CPUs than the head node has runs on the worker nodes of a
three-node ray.cluster_utils.Cluster, and a job whose slots no node can hold shows up as
placement-group demand in the autoscaler's view of the cluster until it fails; prints JSON."""

import json
import sys
import threading
import time

import ray
from ray.autoscaler.v2.sdk import get_cluster_status
from ray.cluster_utils import Cluster

from raystream import MapFunction, StreamExecutionEnvironment


class OnNode(MapFunction):
    def open(self, runtime_context):
        ctx = ray.get_runtime_context()
        self.where = (ctx.get_node_id(), ctx.get_placement_group_id())

    def map(self, value):
        return (value, *self.where)


if __name__ == "__main__":
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        head = ray.get_runtime_context().get_node_id()
        # 4 slots of 1 CPU: more than the head's 1 CPU, so at least 3 go to the workers
        env = StreamExecutionEnvironment()
        env.set_parallelism(4)
        env.set_placement("SPREAD", slot_num_cpus=1)
        rows = list(env.from_sequence(1, 4000).rebalance().map(OnNode()).execute_and_collect())

        # slots of 3 CPUs fit on no node: pending demand until the job gives up
        demand: list = []
        failure: list = []

        def run_big() -> None:
            big = StreamExecutionEnvironment()
            big.set_parallelism(2)
            big.set_placement("PACK", slot_num_cpus=3, timeout=20_000)
            try:
                list(big.from_sequence(1, 10).map(OnNode()).execute_and_collect())
            except Exception as exc:  # noqa: BLE001 - reported below
                failure.append(f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=run_big)
        thread.start()
        deadline = time.monotonic() + 15
        while not demand and time.monotonic() < deadline:
            status = get_cluster_status(cluster.address)
            demand = [
                [dict(b.bundles_by_count[0].bundle) if b.bundles_by_count else {}, b.strategy]
                for b in status.resource_demands.placement_group_demand
            ]
            time.sleep(0.2)
        thread.join(60)
        json.dump(
            {
                "count": len(rows),
                "values": sorted(r[0] for r in rows) == list(range(1, 4001)),
                "head": head,
                "workers": sorted(w.node_id for w in workers),
                "nodes": sorted({r[1] for r in rows}),
                "groups": sorted({r[2] for r in rows}),
                "demand": demand,
                "failure": failure,
                "groups_left": [
                    g["state"]
                    for g in ray.util.placement_group_table().values()
                    if g["state"] != "REMOVED"
                ],
            },
            sys.stdout,
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
