"""``metarl train maml``'s flags derived from the config dataclasses: the same flags, help and values."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import pytest

from metarl.algorithms.maml.config import MAMLConfig, ProMPConfig, TRPOConfig
from metarl.algorithms.maml.options import MAML_FLAGS, RUN_FLAGS, TrainMAMLArgs, config_changes
from metarl.algorithms.presets import MAMLRunConfig, maml_preset
from metarl.core.flags import field_docstrings, parse, unset_flag

FROZEN_HELP = Path(__file__).parent / "data" / "train_maml_help.txt"
"""``metarl train maml --help`` at 200 columns (trailing spaces stripped), written once by the
command's hand-written flag dataclass before the flags were derived from the configs."""
PROG = "metarl train maml"


def _help(cls: type, monkeypatch: pytest.MonkeyPatch, columns: int) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        parse(cls, ["--help"], prog=PROG)
    assert exit_info.value.code == 0
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


def test_derived_flags_print_the_frozen_help(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(TrainMAMLArgs, monkeypatch, 200)
    assert text == FROZEN_HELP.read_text()
    assert "--promp-lr FLOAT" in text and "ProMP: Adam learning rate. (default: the preset's)" in text


def test_every_hyperparameter_flag_takes_its_help_from_the_config_field() -> None:
    names = [field.name for field in dataclasses.fields(TrainMAMLArgs)]
    assert [name for name in names if name in RUN_FLAGS] == list(RUN_FLAGS)
    assert [name for name in names if name in MAML_FLAGS] == list(MAML_FLAGS)
    docs = {**field_docstrings(MAMLRunConfig), **field_docstrings(MAMLConfig), **field_docstrings(TRPOConfig),
            **{ProMPConfig.FLAT_PREFIX + name: text for name, text in field_docstrings(ProMPConfig).items()}}
    for field in dataclasses.fields(TrainMAMLArgs):
        if field.name in RUN_FLAGS + MAML_FLAGS:
            (arg,) = [meta for meta in field.type.__metadata__ if hasattr(meta, "help")]
            assert arg.help == docs[field.name] and field.default is None, field.name


def test_config_changes_apply_the_given_flags_to_the_preset() -> None:
    args = parse(TrainMAMLArgs, "--out r --outer promp --promp-lr 0.01 --max-kl 0.02 --iterations 4".split(),
                 prog=PROG)
    run_changes, maml_changes = config_changes(args)
    assert run_changes == {"iterations": 4}
    assert maml_changes == {"outer": "promp", "promp_lr": 0.01, "max_kl": 0.02}
    config = maml_preset("tiny", "Point2DNav").replace(maml=maml_changes, **run_changes)
    assert config.iterations == 4 and config.maml.outer_config == ProMPConfig(lr=0.01)
    assert config.maml.trpo.max_kl == 0.02


def test_a_field_without_a_derivable_metavar_is_refused() -> None:
    with pytest.raises(TypeError, match="MAMLConfig.trpo"):
        unset_flag(MAMLConfig, "trpo", "the preset's")
