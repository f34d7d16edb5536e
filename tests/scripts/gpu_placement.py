"""Runs parse -> map_batches(num_gpus=0.5) on a two-node ray.cluster_utils.Cluster whose worker
node declares one GPU (no device behind it: Ray's scheduler only counts it) and prints where
each stage ran, as JSON."""

import json
import os
import sys

import ray
from ray.cluster_utils import Cluster

from raystream import MapFunction, StreamExecutionEnvironment


class Parse(MapFunction):
    def open(self, runtime_context):
        self.node = ray.get_runtime_context().get_node_id()

    def map(self, line):
        user, text = line.split(",", 1)
        return {"user": user, "text": text, "parse_node": self.node}


class Model:
    """Stands in for a model on a GPU: reports the node and the GPU Ray gave its actor."""

    def __init__(self):
        self.node = ray.get_runtime_context().get_node_id()
        self.gpus = [str(g) for g in ray.get_gpu_ids()]
        self.visible = os.environ.get("CUDA_VISIBLE_DEVICES")

    def __call__(self, batch):
        n = len(batch["text"])
        return {
            "user": batch["user"],
            "length": [len(t) for t in batch["text"]],
            "parse_node": batch["parse_node"],
            "model_node": [self.node] * n,
            "gpus": [",".join(self.gpus)] * n,
            "visible": [self.visible] * n,
        }


if __name__ == "__main__":
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "resources": {"cpu_node": 100}},
    )
    cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        env = StreamExecutionEnvironment()
        env.set_parallelism(2)
        lines = [f"u{i % 5},{'word ' * (i % 9)}" for i in range(400)]
        out = list(
            env.from_collection(lines)
            .set_resources(resources={"cpu_node": 1})
            .map(Parse())
            .set_resources(resources={"cpu_node": 1})
            .map_batches(Model, batch_size=16, num_gpus=0.5)
            .execute_and_collect()
        )
        gpu_node = [n["NodeID"] for n in ray.nodes() if n["Resources"].get("GPU")][0]
        json.dump(
            {
                "count": len(out),
                "lengths": sorted([r["length"] for r in out]),
                "parse_nodes": sorted({r["parse_node"] for r in out}),
                "model_nodes": sorted({r["model_node"] for r in out}),
                "gpus": sorted({r["gpus"] for r in out}),
                "visible": sorted({str(r["visible"]) for r in out}),
                "gpu_node": gpu_node,
                "cluster_nodes": len([n for n in ray.nodes() if n["Alive"]]),
            },
            sys.stdout,
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
