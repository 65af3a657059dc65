"""Run every benchmark in turn (`make bench`), each in its own process, and say which ones could not run.

One at a time on purpose: on 2 cores two benchmarks at once would measure each other. The extraction and
steering benchmarks need the real model and corpus (`make demo` first); steering also needs a trained run.
The training comparison needs SAELens, a dev dependency (`make install-dev`).
Copy the printed figures into benchmarks/RESULTS.md with the machine, date and load.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commands() -> list[tuple[str, list[str]]]:
    """(name, argv) for each benchmark."""
    names = ("server", "upload_load", "analysis", "extract", "steer", "align", "spliced", "train")
    return [(name, [sys.executable, f"benchmarks/{name}_bench.py"]) for name in names]


def main() -> int:
    failed = []
    for name, argv in commands():
        print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
        if subprocess.run(argv, cwd=ROOT).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
