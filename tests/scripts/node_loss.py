"""Removes a worker node of a ray.cluster_utils.Cluster while a checkpointed job runs on it; the
job must recover on the remaining node with exactly-once output. Prints a JSON summary."""

import json
import sys
import tempfile
import time

import ray
from ray.cluster_utils import Cluster

from raystream import RestartStrategies, StreamExecutionEnvironment
from tests.chaos_jobs import Collector, PacedEvents, SequenceCheck, check_sequences, wait_until

N = 30_000

if __name__ == "__main__":
    # the head runs the driver and the job master (no CPUs for tasks); tasks need a CPU each,
    # so they land on the two worker nodes
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    workers = [cluster.add_node(num_cpus=4), cluster.add_node(num_cpus=4)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        env = StreamExecutionEnvironment()
        env.set_parallelism(2)
        env.get_config().task_num_cpus = 1
        env.enable_checkpointing(200)
        env.get_checkpoint_config().set_checkpoint_storage(tempfile.mkdtemp(prefix="rs-node-loss-"))
        env.set_restart_strategy(RestartStrategies.fixed_delay_restart(3, 0))
        stream = (
            env.from_source(PacedEvents(N, rate=3000), source_name="events")
            .key_by(lambda e: e[0])
            .process(SequenceCheck())
            .name("seq")
        )
        col = Collector(stream.execute_and_collect("node-loss"))
        client = col.client
        wait_until(lambda: client.get_checkpoint_stats()["completed"] >= 2, what="checkpoints")
        by_node = {}
        for t in client.metrics()["tasks"]:
            by_node.setdefault(t["node"], []).append(t["task"])
        victim = next(w for w in workers if w.node_id in by_node)
        cluster.remove_node(victim)
        t_removed = time.time()
        values = col.join(180)
        check_sequences(values, N)
        stats = client.get_checkpoint_stats()
        json.dump(
            {
                "count": len(values),
                "restarts": stats["restarts"],
                "restored_from": stats["restored_from"],
                "tasks_on_removed_node": len(by_node[victim.node_id]),
                "alive_nodes": len([n for n in ray.nodes() if n["Alive"]]),
            },
            sys.stdout,
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
