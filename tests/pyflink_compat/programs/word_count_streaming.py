"""Word count in streaming mode: every word's running count, one update per occurrence."""

from raystream.common import Types
from raystream.datastream import StreamExecutionEnvironment

TEXT = [
    "the quick brown fox",
    "jumps over the lazy dog",
    "the dog barks",
    "a fox runs over the hill",
]


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    counts = (
        env.from_collection(TEXT, type_info=Types.STRING())
        .flat_map(lambda line: line.split(" "), output_type=Types.STRING())
        .map(lambda w: (w, 1), output_type=Types.TUPLE([Types.STRING(), Types.INT()]))
        .key_by(lambda pair: pair[0], key_type=Types.STRING())
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
    )
    with counts.execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
