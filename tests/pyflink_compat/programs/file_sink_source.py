"""FileSink in row format (part prefix/suffix from an OutputFileConfig, default rolling
policy) into a temporary folder, then FileSource with the text-line record-stream format
reading it back. Checkpointing lets the sink finish its part files when the input ends."""

import os
import sys
import tempfile

from raystream.common import Encoder, Types, WatermarkStrategy
from raystream.datastream import StreamExecutionEnvironment
from raystream.datastream.connectors.file_system import (
    FileSink,
    FileSource,
    OutputFileConfig,
    RollingPolicy,
    StreamFormat,
)


def main(base: str | None = None) -> list[str]:
    base = base or tempfile.mkdtemp(prefix="compat-files-")
    out_dir = os.path.join(base, "out")
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    env.enable_checkpointing(200)
    sink = (
        FileSink.for_row_format(out_dir, Encoder.simple_string_encoder())
        .with_output_file_config(
            OutputFileConfig.builder().with_part_prefix("part").with_part_suffix(".txt").build()
        )
        .with_rolling_policy(RollingPolicy.default_rolling_policy())
        .build()
    )
    env.from_collection([f"line {i:02d}" for i in range(20)], type_info=Types.STRING()).sink_to(
        sink
    )
    env.execute("write")

    names = []
    for _folder, _, files in os.walk(out_dir):
        names += [f for f in files if not f.startswith(".")]
    lines = [
        f"files={len(names)} "
        f"named_ok={all(n.startswith('part') and n.endswith('.txt') for n in names)}"
    ]

    env2 = StreamExecutionEnvironment.get_execution_environment()
    env2.set_parallelism(2)
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), out_dir).build()
    read = env2.from_source(source, WatermarkStrategy.no_watermarks(), "read").map(
        lambda line: line.upper(), output_type=Types.STRING()
    )
    with read.execute_and_collect() as results:
        lines += sorted(str(r) for r in results)
    return lines


if __name__ == "__main__":
    for line in main(sys.argv[1] if len(sys.argv) > 1 else None):
        print(line)
