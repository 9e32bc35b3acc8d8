"""The ``metarl`` console script: a thin dispatcher over the subcommand modules.

Each subcommand lives in ``metarl.commands.<name>`` with a ``main(argv) -> int``
that parses its own flags (a tyro dataclass, so every flag has help text). This
table is the one place where commands are listed. Errors that a user can fix
(:class:`UserError`, ``ValueError`` from input checks) are printed as one
paragraph without a traceback and exit with status 2.

Families of your own are loaded before any command runs: the modules named by the
``metarl.families`` entry-point group and by ``METARL_PLUGINS`` (comma-separated)
are imported, and they call ``register_family`` (docs/adding-a-family.md).
"""

from __future__ import annotations

import importlib
import sys
import textwrap

# command words -> (module under metarl.commands, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("envs",): ("envs_cmd", "list the task families with their parameters, ranges and splits"),
    ("demo",): ("demo_cmd", "the main job: meta-train MAML on Point2DNav, evaluate on unseen goals, compare with the paper"),
    ("train", "maml"): ("train_maml", "meta-train a policy with MAML (TRPO or ProMP outer loop)"),
    ("train", "pretrain"): ("train_pretrain", "the MAML paper's pretrained baseline: TRPO on the task mixture, adapted like MAML"),
    ("train", "finetune"): ("train_finetune", "pretrain a stable-baselines3 PPO/SAC agent on the train-task mixture"),
    ("train", "protonet"): ("train_protonet", "train a ProtoNet encoder that identifies the task variant from a few transitions"),
    ("train", "random-init"): ("train_random_init", "create a random-initialisation baseline run (adapted at evaluation like MAML)"),
    ("evaluate",): ("evaluate_cmd", "evaluate a run on unseen tasks: return before and after k = 1..3 adaptation steps"),
    ("compare",): ("compare_cmd", "compare evaluated runs: markdown table, CSV and plots of return vs k and vs samples"),
    ("render",): ("render_cmd", "render a run before and after adaptation on one unseen task (headless, mp4 or gif)"),
    ("bench",): ("bench_cmd", "benchmarks: metarl bench envs|... (ratios measured side by side)"),
}


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def _usage() -> str:
    lines = ["usage: metarl COMMAND [options]   (metarl COMMAND --help for its flags)", "", "commands:"]
    for words, (_, help_text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {help_text}")
    return "\n".join(lines)


def _find(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    for length in (2, 1):
        words = tuple(argv[:length])
        if words in COMMANDS:
            return words, argv[length:]
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metarl`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    found = _find(argv)
    if found is None:
        print(f"metarl: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    words, rest = found
    try:
        import envs

        envs.load_plugins()
    except ImportError as error:
        print(textwrap.fill(f"metarl: error: {error}", width=100), file=sys.stderr)
        return 2
    module = importlib.import_module(f"metarl.commands.{COMMANDS[words][0]}")
    try:
        return int(module.main(rest) or 0)
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as error:
        message = textwrap.fill(f"metarl {' '.join(words)}: error: {error}", width=100)
        print(message, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metarl {' '.join(words)}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run as ``python -m metarl.cli``: dispatch through the imported module, so that
    # the command modules' ``metarl.cli.UserError`` is the class caught above.
    from metarl.cli import main as package_main

    sys.exit(package_main())
