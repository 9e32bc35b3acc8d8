"""Env speed benchmark (docs/design.md, "Benchmarks"); the same as ``metarl bench envs``.

Usage: python scripts/bench_envs.py [--repeats 3] [--robots half_cheetah ant hopper] ...
"""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "envs", *sys.argv[1:]]))
