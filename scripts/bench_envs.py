"""Env speed benchmark (docs/design.md, "Benchmarks"); the same as ``metarl bench envs``.

Usage: python scripts/bench_envs.py [--repeats 3] [--robots half_cheetah ant hopper] ...
"""

import sys

from metarl.commands.bench.envs import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
