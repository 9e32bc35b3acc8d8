"""MAML presets as data: every (preset, family) gives what the if-ladder it replaced gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import metarl_envs as envs
from metarl.algorithms.presets import (
    MAML_PRESETS,
    OTHER_FAMILIES,
    PRESETS,
    MAMLRunConfig,
    maml_preset,
)

FROZEN = Path(__file__).parent / "data" / "maml_presets_frozen.json"
"""``maml_preset(preset, family).to_dict()`` for every preset and family, written once by the
code before the presets became a table (keys ``"<preset>/<family>"``)."""


def _frozen() -> dict[str, dict]:
    return json.loads(FROZEN.read_text())


def test_the_frozen_copy_covers_every_preset_and_family() -> None:
    assert set(_frozen()) == {f"{preset}/{family}" for preset in PRESETS for family in envs.FAMILIES}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("family", envs.FAMILIES)
def test_every_preset_and_family_gives_the_frozen_values(preset: str, family: str) -> None:
    expected = _frozen()[f"{preset}/{family}"]
    config = maml_preset(preset, family)
    assert json.loads(json.dumps(config.to_dict())) == expected
    assert MAMLRunConfig.from_dict(expected) == config


def test_the_table_names_known_presets_and_families_only() -> None:
    assert tuple(MAML_PRESETS) == PRESETS
    for preset, rows in MAML_PRESETS.items():
        assert OTHER_FAMILIES in rows, preset
        assert set(rows) - {OTHER_FAMILIES} <= set(envs.FAMILIES), preset


def test_a_family_without_a_row_takes_the_other_families_row() -> None:
    ant, hopper = maml_preset("paper", "AntDir"), maml_preset("paper", "HopperRandParams")
    assert (ant.iterations, ant.meta_batch_size, ant.nonlinearity) == (200, 40, "tanh")
    assert ant.replace(family="HopperRandParams") == hopper
    assert maml_preset("fast", "HalfCheetahDir").iterations == 50  # no HalfCheetahDir row in "fast"


def test_unknown_preset_or_family_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'; available presets: tiny, fast, paper"):
        maml_preset("huge", "Point2DNav")
    with pytest.raises(ValueError, match="Point2DNav"):
        maml_preset("tiny", "NoSuchFamily")
