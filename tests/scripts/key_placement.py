"""Prints, as JSON, the subtask every key was processed on (run in a fresh Ray session)."""

import json

import ray

from raystream import KeyedProcessFunction, StreamExecutionEnvironment


class WhereAmI(KeyedProcessFunction):
    def open(self, runtime_context):
        self.index = runtime_context.get_index_of_this_subtask()

    def process_element(self, value, ctx):
        yield (repr(value), self.index)


KEYS = [f"user-{i}" for i in range(100)] + [b"raw", ("t", 1), None, 3, 3.5, True]

if __name__ == "__main__":
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    env = StreamExecutionEnvironment()
    env.set_parallelism(3)
    placed = dict(
        env.from_collection(KEYS).key_by(lambda k: k).process(WhereAmI()).execute_and_collect()
    )
    print(json.dumps(placed, sort_keys=True), flush=True)
    ray.shutdown()
