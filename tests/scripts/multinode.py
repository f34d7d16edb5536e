"""Runs a keyed job on a two-node ray.cluster_utils.Cluster and prints results and node ids."""

import json
import sys

import ray
from ray.cluster_utils import Cluster

from raystream import MapFunction, StreamExecutionEnvironment


class OnNode(MapFunction):
    def open(self, runtime_context):
        self.node = ray.get_runtime_context().get_node_id()

    def map(self, value):
        return (value[0], value[1], self.node)


if __name__ == "__main__":
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        env = StreamExecutionEnvironment()
        env.set_parallelism(4)
        out = (
            env.from_sequence(1, 20000)
            .map(lambda x: (x % 13, x))
            .key_by(lambda t: t[0])
            .sum(1)
            .map(OnNode())
            .execute_and_collect()
        )
        rows = list(out)
        finals = {}
        for k, total, _ in rows:
            finals[k] = max(total, finals.get(k, 0))
        json.dump(
            {
                "finals": {str(k): v for k, v in finals.items()},
                "count": len(rows),
                "nodes": sorted({n for _, _, n in rows}),
                "cluster_nodes": len([n for n in ray.nodes() if n["Alive"]]),
            },
            sys.stdout,
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
