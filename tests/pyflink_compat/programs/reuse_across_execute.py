"""A stream defined once and used by two jobs, one after the other."""

from raystream.common import Types
from raystream.datastream import StreamExecutionEnvironment


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    numbers = env.from_collection([1, 2, 3, 4, 5, 6], type_info=Types.INT())
    evens = numbers.filter(lambda n: n % 2 == 0)
    with evens.map(lambda n: f"first {n}", output_type=Types.STRING()).execute_and_collect() as r:
        lines = [str(x) for x in r]
    with evens.map(
        lambda n: f"second {n * 10}", output_type=Types.STRING()
    ).execute_and_collect() as r:
        lines += [str(x) for x in r]
    return lines


if __name__ == "__main__":
    for line in main():
        print(line)
