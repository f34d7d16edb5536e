"""Runs a compat program on real PyFlink, to re-check the expected outputs in the tests.

Usage: python tests/pyflink_compat/run_on_pyflink.py PROGRAM [PROGRAM ...]
       [--python /path/to/pyflink/venv/bin/python]

PROGRAM is a file under programs/ (or its name without ``.py``). The program's imports are
renamed back (``from raystream.X`` -> ``from pyflink.X``), the copy is run with a Python that
has ``apache-flink`` installed (and Java), and its printed lines are shown. Not a test module:
pytest does not collect it.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
IMPORT = re.compile(r"^(\s*)(from|import)(\s+)raystream(\b)", re.MULTILINE)


def to_pyflink(source: str) -> str:
    """The program's text with its raystream imports renamed to PyFlink's module paths."""
    return IMPORT.sub(lambda m: f"{m[1]}{m[2]}{m[3]}pyflink{m[4]}", source)


def resolve(name: str) -> pathlib.Path:
    path = pathlib.Path(name)
    if path.exists():
        return path
    candidate = HERE / "programs" / (name if name.endswith(".py") else name + ".py")
    if not candidate.exists():
        raise SystemExit(f"no program {name!r} (looked for {candidate})")
    return candidate


def run(program: pathlib.Path, python: str, timeout_s: float) -> int:
    with tempfile.TemporaryDirectory(prefix="on-pyflink-") as tmp:
        copy = pathlib.Path(tmp) / program.name
        copy.write_text(to_pyflink(program.read_text()))
        # PyFlink starts its Python workers with the ``python`` found on PATH
        env = dict(
            os.environ,
            PATH=os.pathsep.join([str(pathlib.Path(python).parent), os.environ.get("PATH", "")]),
        )
        proc = subprocess.run(
            [python, str(copy)], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    print(f"### {program.stem} (exit {proc.returncode})")
    sys.stdout.write(proc.stdout)
    if proc.returncode:
        sys.stdout.write(proc.stderr[-4000:])
    return proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("programs", nargs="+")
    parser.add_argument("--python", default="/work/venv/pyflink/bin/python")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    failed = 0
    for name in args.programs:
        failed += run(resolve(name), args.python, args.timeout_s) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
