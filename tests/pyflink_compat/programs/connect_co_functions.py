"""Two streams connected: a CoMapFunction and a CoFlatMapFunction over (numbers, words)."""

from raystream.common import Types
from raystream.datastream import StreamExecutionEnvironment
from raystream.datastream.functions import CoFlatMapFunction, CoMapFunction


class Describe(CoMapFunction):
    def map1(self, value):
        return f"number {value} squared {value * value}"

    def map2(self, value):
        return f"word {value} length {len(value)}"


class Explode(CoFlatMapFunction):
    def flat_map1(self, value):
        for i in range(value):
            yield f"n{value}.{i}"

    def flat_map2(self, value):
        yield from (f"c:{c}" for c in value)


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    numbers = env.from_collection([1, 2, 3], type_info=Types.INT())
    words = env.from_collection(["ab", "xyz"], type_info=Types.STRING())
    mapped = numbers.connect(words).map(Describe(), output_type=Types.STRING())
    flat = numbers.connect(words).flat_map(Explode(), output_type=Types.STRING())
    with mapped.union(flat).execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
