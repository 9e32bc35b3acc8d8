"""Every ``metarl ... --help`` reads cleanly, and the group words list their subcommands."""

from __future__ import annotations

import pytest

from metarl import cli
from metarl.algorithms.maml.train_args import TrainMAMLArgs
from metarl.commands import bench_cmd
from metarl.core.flags import parse

COMMANDS = [list(words) for words in cli.COMMANDS if words != ("bench",)]
COMMANDS += [list(words) for words in cli.train_commands()]  # metarl train <word>: the method registry
COMMANDS += [["bench", target] for target in bench_cmd.TARGETS]


def _help(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "200")  # one line per help text, so phrases can be searched whole
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help_shows_no_none_metavar_no_double_negation_and_no_none_default(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(argv, capsys, monkeypatch)
    assert f"usage: metarl {' '.join(argv)}" in text
    assert "{None}" not in text
    assert "None," not in text  # {None,True,False}
    assert "--no-no-" not in text
    assert "(default: None)" not in text
    assert "(default: )" not in text


def test_help_lists_choices_and_states_the_defaults_of_unset_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import metarl_envs as envs

    text = _help(["train", "maml"], capsys, monkeypatch)
    assert "--env FAMILY" in text and all(family in text for family in envs.FAMILIES)
    assert "--preset {tiny,fast,paper}" in text and "(default: fast)" in text
    assert "--device {auto,cpu,cuda}" in text
    assert "--nonlinearity {tanh,relu}" in text and "--outer {trpo,promp}" in text
    assert "--no-progress " in text and "--no-tensorboard " in text
    # a docstring spanning several source lines is one paragraph in the help
    assert "(Xavier-uniform weights, zero biases, as rllab's MAML policies)" in text
    assert "--split {test,ood}" in _help(["evaluate"], capsys, monkeypatch)


@pytest.mark.parametrize("argv", [["train"], ["train", "--help"], ["train", "-h"], ["train", "help"]])
def test_train_alone_lists_its_subcommands(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for words in cli.COMMANDS:
        assert " ".join(words) not in out
    from metarl import methods

    for method in methods.methods():
        assert f"  train {method.train_word:<12} {method.summary}" in out


def test_unknown_train_subcommand_lists_the_train_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "nope"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line naming the known ones
    assert "unknown command 'train nope'" in err and "evaluate" not in err
    assert all(f"train {word}" in err for word in ("maml", "pretrain", "finetune", "protonet", "random-init"))


@pytest.mark.parametrize("argv", [["bench"], ["bench", "--help"], ["bench", "help"]])
def test_bench_alone_lists_its_targets(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert all(target in out for target in bench_cmd.TARGETS)


def test_the_flags_of_long_runs_parse_as_before() -> None:
    argv = ("--env HalfCheetahDir --preset paper --nonlinearity relu --episodes-per-task 10 --horizon 200 "
            "--iterations 200 --seed 7 --device cpu --threads 1 --no-progress --out runs/x --resume "
            "--first-order True --hidden-sizes 64 64 --no-tensorboard").split()
    args = parse(TrainMAMLArgs, argv, prog="metarl train maml")
    assert isinstance(args, TrainMAMLArgs)
    assert (args.env, args.preset, args.nonlinearity, args.episodes_per_task, args.horizon) == (
        "HalfCheetahDir", "paper", "relu", 10, 200)
    assert (args.iterations, args.seed, args.device, args.threads) == (200, 7, "cpu", 1)
    assert args.no_progress and args.resume and args.first_order and args.no_tensorboard
    assert args.hidden_sizes == (64, 64) and str(args.out) == "runs/x"
    unset = parse(TrainMAMLArgs, ["--out", "runs/y"], prog="metarl train maml")
    assert (unset.env, unset.preset, unset.seed, unset.no_progress, unset.resume) == (None, None, None, False, False)


@pytest.mark.parametrize("argv", [["train", name] for name in ("maml", "pretrain", "finetune", "protonet",
                                                                "random-init")] + [["envs"]], ids=" ".join)
def test_every_family_flag_lists_the_families(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import metarl_envs as envs

    text = _help(argv, capsys, monkeypatch)
    assert " FAMILY " in text
    assert "one of " + ", ".join(envs.FAMILIES) in " ".join(text.split())


def test_evaluate_flags_are_the_protocol_options_fields() -> None:
    """`metarl evaluate`'s protocol flags come from EvalOptions (one definition, its docstrings as help)."""
    import dataclasses

    from metarl.commands.evaluate_cmd import PROTOCOL_FLAGS, EvaluateArgs
    from metarl.core.flags import field_docstrings
    from metarl.evaluation.protocol import EvalOptions

    args = {field.name: field for field in dataclasses.fields(EvaluateArgs)}
    options = {field.name: field for field in dataclasses.fields(EvalOptions)}
    docs = field_docstrings(EvalOptions)
    assert [name for name in args if name in PROTOCOL_FLAGS] == list(PROTOCOL_FLAGS)
    assert "tasks" in args and "tasks" in options  # the command's --tasks FILE; EvalOptions holds the tasks read
    for name in PROTOCOL_FLAGS:
        assert args[name].default == options[name].default, name
        helps = [getattr(meta, "help", None) for meta in getattr(args[name].type, "__metadata__", ())]
        assert docs[name] in helps, name


def test_render_flags_are_the_video_options_fields() -> None:
    """`metarl render`'s video flags come from RenderOptions (one definition, its docstrings as help)."""
    import dataclasses

    from metarl.commands.render_cmd import RenderArgs
    from metarl.core.flags import field_docstrings
    from metarl.video.options import RenderOptions

    args = {field.name: field for field in dataclasses.fields(RenderArgs)}
    options = {field.name: field for field in dataclasses.fields(RenderOptions)}
    docs = field_docstrings(RenderOptions)
    shared = [name for name in options if name in args and name != "steps"]  # --steps is text on the CLI
    assert set(options) - set(shared) <= {"steps", "progress"}
    for name in shared:
        assert args[name].default == options[name].default, name
        helps = [getattr(meta, "help", None) for meta in getattr(args[name].type, "__metadata__", ())]
        assert docs[name] in helps, name
