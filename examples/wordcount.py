"""Word count: split lines into words, key by word, keep a running count per word.

    python examples/wordcount.py                 # built-in text, local embedded Ray
    python examples/wordcount.py --input FILE    # any text file (or directory of files)

Runs on a laptop with an embedded Ray, and unchanged on a cluster
(``ray job submit --working-dir . -- python examples/wordcount.py``).
"""

from __future__ import annotations

import argparse
import re

from raystream import StreamExecutionEnvironment

TEXT = """\
To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles
And by opposing end them. To die, to sleep,
No more; and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to: 'tis a consummation
Devoutly to be wish'd. To die, to sleep;
To sleep, perchance to dream.
"""


def tokenize(line: str) -> list[str]:
    return re.findall(r"[a-z']+", line.lower())


def word_counts(input_path: str | None = None, parallelism: int = 2) -> dict[str, int]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    lines = env.read_text_file(input_path) if input_path else env.from_collection(TEXT.splitlines())
    counts = (
        lines.flat_map(tokenize)
        .name("tokenize")
        .map(lambda word: (word, 1))
        .key_by(lambda pair: pair[0])
        .sum(1)
        .name("count")
    )
    totals: dict[str, int] = {}
    with counts.execute_and_collect("wordcount") as results:
        for word, count in results:  # running counts: the last one seen per word is its total
            totals[word] = max(count, totals.get(word, 0))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="text file or directory (default: a built-in text)")
    parser.add_argument("--parallelism", type=int, default=2)
    args = parser.parse_args()
    totals = word_counts(args.input, args.parallelism)
    top = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    print(f"{len(totals)} distinct words; top 10:")
    for word, count in top:
        print(f"{count:6d}  {word}")


if __name__ == "__main__":
    main()
