"""Rows: from_collection with ROW and ROW_NAMED type info, a map producing named rows, field
access by name and by position, and rows collected back."""

from raystream.common import Row, Types
from raystream.datastream import StreamExecutionEnvironment


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    people = env.from_collection(
        [(1, "ann", 31), (2, "bob", 27), (3, "cyd", 45)],
        type_info=Types.ROW_NAMED(
            ["id", "name", "age"], [Types.INT(), Types.STRING(), Types.INT()]
        ),
    )
    older = people.map(
        lambda r: Row(name=r.name, age=r["age"] + 1, adult=r[2] >= 30),
        output_type=Types.ROW_NAMED(
            ["name", "age", "adult"], [Types.STRING(), Types.INT(), Types.BOOLEAN()]
        ),
    )
    pairs = env.from_collection(
        [(10, "x"), (20, "y")], type_info=Types.ROW([Types.INT(), Types.STRING()])
    ).map(lambda r: Row(r[1], r[0] * 2), output_type=Types.ROW([Types.STRING(), Types.INT()]))
    described = older.map(
        lambda r: f"{r!r} name={r.name} fields={r.as_dict()} len={len(r)}",
        output_type=Types.STRING(),
    )
    out = described.union(
        pairs.map(lambda r: f"{r!r} f0={r[0]} tuple={tuple(r)}", output_type=Types.STRING())
    )
    with out.execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
