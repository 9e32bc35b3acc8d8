"""``metarl envs``: list every task family with its parameters, ranges and splits."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import metarl_envs as envs
from metarl.core.flags import family_choice, parse


@dataclasses.dataclass(frozen=True)
class EnvsArgs:
    """List the task families of the suite."""

    family: Annotated[str | None, family_choice("default: every family")] = None
    """Show only this family."""
    json: bool = False
    """Print JSON instead of text."""


def describe_all(family: str | None = None) -> dict[str, dict]:
    """Spec of each family: id, horizon, what varies, parameters and splits."""
    names = [family] if family is not None else list(envs.FAMILIES)
    out = {}
    for name in names:
        spec = envs.family_spec(name)
        out[name] = {"id": envs.env_id(name), "horizon": spec.horizon, **envs.distribution(name).describe()}
    return out


def main(argv: list[str]) -> int:
    args = parse(EnvsArgs, argv, prog="metarl envs")
    table = describe_all(args.family)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    for name, info in table.items():
        print(f"{name}  ({info['id']}, horizon {info['horizon']}): varies {info['varies']}")
        for param, meaning in info["parameters"].items():
            print(f"    {param:<28} {meaning}")
        for split, text in info["splits"].items():
            print(f"    split {split:<5} {text}")
        print()
    return 0
