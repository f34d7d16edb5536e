"""Side outputs through ``ctx.output(tag, value)`` (raystream also accepts PyFlink's
``yield tag, value``; PyFlink 2.3 itself has no ``ctx.output``)."""

from raystream.common import Types
from raystream.datastream import OutputTag, ProcessFunction, StreamExecutionEnvironment

SMALL = OutputTag("small", Types.INT())
ODD = OutputTag("odd", Types.STRING())


class Split(ProcessFunction):
    def process_element(self, value, ctx):
        if value < 10:
            ctx.output(SMALL, value)
        elif value % 2:
            ctx.output(ODD, f"odd:{value}")
        else:
            yield value * 100


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    main_out = env.from_collection([3, 12, 15, 8, 20, 31, 1, 44], type_info=Types.INT()).process(
        Split(), output_type=Types.INT()
    )
    small = main_out.get_side_output(SMALL).map(lambda v: f"small:{v}", output_type=Types.STRING())
    odd = main_out.get_side_output(ODD)
    everything = main_out.map(lambda v: f"main:{v}", output_type=Types.STRING()).union(small, odd)
    with everything.execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
