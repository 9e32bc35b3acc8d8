"""The ``metarl`` console script: a thin dispatcher over the subcommand modules and the methods.

``metarl train <word>`` is looked up in the method registry (:mod:`metarl.methods`): the
method whose ``train_word`` it is parses its flags (``Method.train_args``, a tyro dataclass)
and trains (``Method.train``); ``metarl train`` lists them. Every other command lives in
``metarl.commands.<name>`` with a ``main(argv) -> int`` that parses its own flags;
:data:`COMMANDS` is the one place where those are listed. Errors that a user can fix
(:class:`UserError`, ``ValueError`` from input checks, and operating-system
errors such as a read-only, full or missing directory, named with their path)
are printed as one paragraph without a traceback and exit with status 2.

Signals: every command runs with SIGTERM handled as Ctrl-C
(:func:`metarl.core.interrupts.sigterm_as_interrupt`): a training saves the
checkpoint of its last completed iteration, says so, and exits with status 130
after Ctrl-C (SIGINT) or 143 after SIGTERM; ``--resume`` continues it.

``MUJOCO_GL`` is checked before any command imports MuJoCo
(:func:`metarl_envs.gl.check_mujoco_gl`): only ``render`` needs OpenGL and refuses a
backend that cannot work here, saying what to install or set; the other
commands run whatever it holds.

Families of your own are loaded before any command runs: the modules named by the
``metarl.families`` entry-point group and by ``METARL_PLUGINS`` (comma-separated)
are imported, and they call ``register_family`` (docs/adding-a-family.md).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

from metarl.core.errors import UserError
from metarl.core.interrupts import exit_status, sigterm_as_interrupt
from metarl_envs.gl import MujocoGLError, check_mujoco_gl

TRAIN = "train"
"""The command word whose subcommands are the registered methods' ``train_word`` (:mod:`metarl.methods`)."""

# command words -> (module under metarl.commands, one-line help); `metarl train <word>` comes from the registry
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("envs",): ("envs_cmd", "list the task families with their parameters, ranges and splits"),
    ("demo",): ("demo_cmd", "the main job: meta-train MAML on Point2DNav, evaluate on unseen goals, compare with the paper"),
    ("evaluate",): ("evaluate_cmd", "evaluate a run on unseen tasks: return before and after k = 1..3 adaptation steps"),
    ("compare",): ("compare_cmd", "compare evaluated runs: markdown table, CSV and plots of return vs k and vs samples"),
    ("render",): ("render_cmd", "render a run before and after adaptation on one unseen task (headless, mp4 or gif)"),
    ("study", "run"): ("study_run_cmd", "run a study (families x methods x seeds: train, evaluate) on Ray; rerun to continue"),
    ("study", "report"): ("study_report_cmd", "pooled tables, plots and a markdown report of a study directory"),
    ("bench",): ("bench_cmd", "benchmarks: metarl bench envs|... (ratios measured side by side)"),
}


def train_commands() -> dict[tuple[str, ...], str]:
    """``("train", word) -> summary`` of every registered method (:func:`metarl.methods.methods`)."""
    from metarl import methods

    return {(TRAIN, method.train_word): method.summary for method in methods.methods()}


def _listing() -> dict[tuple[str, ...], str]:
    """Every command's words -> its one-line help, in the order ``metarl --help`` lists them."""
    listing: dict[tuple[str, ...], str] = {}
    for index, (words, (_, help_text)) in enumerate(COMMANDS.items()):
        if index == 2:  # the training commands after envs and demo
            listing.update(train_commands())
        listing[words] = help_text
    return listing


def _usage(group: str | None = None) -> str:
    """The list of commands; with ``group`` (e.g. ``"train"``) only that group's subcommands."""
    if group is None:
        lines = ["usage: metarl COMMAND [options]   (metarl COMMAND --help for its flags)", "", "commands:"]
    else:
        lines = [f"usage: metarl {group} SUBCOMMAND [options]   (metarl {group} SUBCOMMAND --help for its flags)",
                 "", f"{group} subcommands:"]
    for words, help_text in _listing().items():
        if group is None or (len(words) > 1 and words[0] == group):
            lines.append(f"  {' '.join(words):<18} {help_text}")
    if group is None:
        lines += ["", "exit status: 0 done; 2 bad input or an OS error (one line, no traceback); 130 after Ctrl-C",
                  "and 143 after SIGTERM (trainings save their checkpoint first; continue with --resume)"]
    return "\n".join(lines)


def _groups() -> set[str]:
    """First words of the multi-word commands (``train``, ``study``)."""
    return {TRAIN} | {words[0] for words in COMMANDS if len(words) > 1}


def _one_line(text: str) -> str:
    """``text`` on one line (newlines and runs of spaces collapsed), so errors grep as one line."""
    return " ".join(text.split())


def os_error_message(error: OSError) -> str:
    """One line for an operating-system error: what failed, on which path, and what to do."""
    path = error.filename if error.filename is not None else ""
    reason = error.strerror or str(error)
    advice = {
        errno.EROFS: "the file system is read-only; choose a writable directory",
        errno.EACCES: "permission denied; choose a directory you can write, or change its permissions",
        errno.EPERM: "the operation is not permitted (an immutable file or a system path?); choose another path",
        errno.ENOSPC: "the disk is full; free space (a training stopped by it keeps its last checkpoint: "
                      "continue it with --resume)",
        errno.EDQUOT: "the disk quota is exceeded; free space",
        errno.ENOENT: "a directory on the path does not exist",
        errno.ENOTDIR: "a component of the path is not a directory",
        errno.EISDIR: "the path is a directory",
    }.get(error.errno or -1, "")
    where = f"{path}: " if path else ""
    return f"{where}{reason}" + (f"; {advice}" if advice else "")


def _find(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """The command words ``argv`` starts with (a registered ``train <word>`` or a row of :data:`COMMANDS`)
    and the rest; None if it names no command."""
    for length in (2, 1):
        words = tuple(argv[:length])
        if words in COMMANDS or (words[:1] == (TRAIN,) and words in train_commands()):
            return words, argv[length:]
    return None


def _load_plugins(name: str) -> int | None:
    """Import the plugin modules (families, methods); 2 after a one-line error if one fails, else None."""
    try:
        import metarl_envs as envs

        envs.load_plugins()
    except (ImportError, ValueError) as error:  # a plugin that cannot be imported, or registers badly
        print(_one_line(f"metarl {name}: error: {error}"), file=sys.stderr)
        return 2
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metarl`` console script."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError as error:
        if not _stdout_is_closed():
            print(_one_line(f"metarl: error: {os_error_message(error)}"), file=sys.stderr)
            return 2
        return 1  # the reader went away (`metarl envs | head -1`): stop quietly, as other command-line tools do


def _stdout_is_closed() -> bool:
    """True if stdout's reader has gone away; then stdout is pointed at /dev/null, so that Python does not
    report the same broken pipe again when it flushes stdout at exit."""
    try:
        sys.stdout.flush()
        return False
    except BrokenPipeError:
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (main() called with stdout captured)
        pass
    return True


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == TRAIN:
        failed = _load_plugins(TRAIN)  # a plugin may register a method
        if failed is not None:
            return failed
        if len(argv) == 1 or argv[1] in ("-h", "--help", "help"):
            print(_usage(TRAIN))
            return 0
        if (TRAIN, argv[1]) not in train_commands():
            known = ", ".join(" ".join(words) for words in train_commands())
            print(_one_line(f"metarl: unknown command {' '.join(argv[:2])!r}; the training commands are: {known} "
                            "(metarl train lists them)"), file=sys.stderr)
            return 2
    found = _find(argv)
    if found is None and argv[0] in _groups():
        # `metarl study`, `metarl study --help`: list the group's subcommands
        if len(argv) == 1 or argv[1] in ("-h", "--help", "help"):
            print(_usage(argv[0]))
            return 0
        print(f"metarl: unknown command {' '.join(argv[:2])!r}\n\n{_usage(argv[0])}", file=sys.stderr)
        return 2
    if found is None:
        print(f"metarl: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    words, rest = found
    name = " ".join(words)
    if words[0] != TRAIN:
        failed = _load_plugins(name)
        if failed is not None:
            return failed
    try:
        with sigterm_as_interrupt():
            check_mujoco_gl(render=words == ("render",))
            if words[0] == TRAIN:
                from metarl.methods import dispatch

                return dispatch.train(words[1], rest)
            module = importlib.import_module(f"metarl.commands.{COMMANDS[words][0]}")
            return int(module.main(rest) or 0)
    except BrokenPipeError:
        raise  # not a failure of the command: main stops quietly
    except (UserError, ValueError, FileExistsError, MujocoGLError) as error:
        print(_one_line(f"metarl {name}: error: {error}"), file=sys.stderr)
        return 2
    except OSError as error:  # FileNotFoundError raised by our checks carries its own message
        text = str(error) if error.errno is None else os_error_message(error)
        print(_one_line(f"metarl {name}: error: {text}"), file=sys.stderr)
        return 2
    except MemoryError:
        print(f"metarl {name}: error: out of memory; lower the sizes (tasks, episodes, horizon) of the "
              "request", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"metarl {name}: interrupted ({'SIGTERM' if exit_status(interrupt) == 143 else 'SIGINT'})",
              file=sys.stderr)
        return exit_status(interrupt)


if __name__ == "__main__":
    # Run as ``python -m metarl.cli``: dispatch through the imported module, so that
    # the command modules' ``UserError`` is the class caught above.
    from metarl.cli import main as package_main

    sys.exit(package_main())
