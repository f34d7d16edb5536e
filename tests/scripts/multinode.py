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
        return (value, 0, self.node)


if __name__ == "__main__":
    # custom resources pin the two halves of the job to different nodes, so the keyed shuffle
    # crosses from one node to the other
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "resources": {"head": 100}},
    )
    cluster.add_node(num_cpus=1, resources={"worker": 100})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        env = StreamExecutionEnvironment()
        env.set_parallelism(4)
        out = (
            env.from_sequence(1, 20000)
            .set_resources(resources={"head": 1})
            .map(OnNode())
            .set_resources(resources={"head": 1})
            .map(lambda t: (t[0] % 13, t[0], t[2]))
            .set_resources(resources={"head": 1})
            .key_by(lambda t: t[0])
            .reduce(lambda a, b: (a[0], a[1] + b[1], a[2]))
            .set_resources(resources={"worker": 1})
            .map(OnNode())
            .set_resources(resources={"worker": 1})
            .execute_and_collect()
        )
        rows = [(k, total, source_node, node) for (k, total, source_node), _, node in list(out)]
        finals = {}
        for k, total, _, _ in rows:
            finals[k] = max(total, finals.get(k, 0))
        json.dump(
            {
                "finals": {str(k): v for k, v in finals.items()},
                "count": len(rows),
                "source_nodes": sorted({s for _, _, s, _ in rows}),
                "nodes": sorted({n for _, _, _, n in rows}),
                "cluster_nodes": len([n for n in ray.nodes() if n["Alive"]]),
            },
            sys.stdout,
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
