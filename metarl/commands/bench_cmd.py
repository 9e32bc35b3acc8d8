"""``metarl bench TARGET``: run one of the benchmarks of docs/design.md, "Benchmarks".

Each target is a module with ``main(argv) -> int`` that parses its own flags
(``metarl bench envs --help``). Add a target with one line in ``TARGETS``.
"""

from __future__ import annotations

import importlib

from metarl.core.errors import UserError

# target -> (module with main(argv), one-line help)
TARGETS: dict[str, tuple[str, str]] = {
    "envs": ("metarl.commands.bench.envs", "env steps/s: ours vs gymnasium v5, SyncVectorEnv x8 and mujoco.rollout"),
    "maml": ("metarl.commands.bench.maml", "MAML: sampler overhead, s/meta-iteration (Point2DNav, HalfCheetahVel paper configs)"),
    "sampler": ("metarl.commands.bench.sampler", "Ray sampler with 1, 2 workers vs the local sampler: env steps/s, Ray's overhead"),
}


def usage() -> str:
    lines = ["usage: metarl bench TARGET [options]   (metarl bench TARGET --help for its flags)", "",
             "targets:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in TARGETS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    target, rest = argv[0], argv[1:]
    if target not in TARGETS:
        raise UserError(f"unknown bench target {target!r}; available targets: {', '.join(TARGETS)}")
    module = importlib.import_module(TARGETS[target][0])
    return int(module.main(rest) or 0)
