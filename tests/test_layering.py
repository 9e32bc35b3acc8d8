"""Dependencies point one way (docs/design.md, "Architecture"): envs never imports torch or metarl."""

import subprocess
import sys


def test_import_envs_imports_neither_torch_nor_metarl() -> None:
    code = (
        "import sys, gymnasium as gym\nimport metarl_envs as envs\n"
        "for family in envs.FAMILIES:\n"
        "    envs.distribution(family)\n"
        "    gym.make(envs.env_id(family)).close()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'metarl', 'stable_baselines3'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"envs imported: {out.stdout.strip()}"


# --- metarl's own layers (docs/design.md, "Architecture") -------------------------------------
# A module may import its own package and any package of a lower or equal rank, never a higher
# one; function-local imports count. metarl/cli.py (the entry point) is the only module outside
# commands/ that imports metarl.commands.
import ast  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RANKS: dict[str, int] = {
    "core": 0,
    "storage": 1, "cluster": 1,
    "training": 2,
    "algorithms": 3,
    "identification": 4,
    "evaluation": 5,
    "video": 6,
    "methods": 7,
    "studies": 8, "api": 8, "__init__": 8,
    "commands": 9,
    "cli": 10, "__main__": 10,
}
# imports that still point the wrong way: (importing package, imported package) -> why. Empty when done.
KNOWN: dict[tuple[str, str], str] = {
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "metarl":
                names |= {f"metarl.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] == "metarl"}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_metarl_packages_import_only_downwards() -> None:
    wrong: dict[tuple[str, str], list[str]] = {}
    for path in sorted((ROOT / "metarl").rglob("*.py")):
        source = _package("metarl." + ".".join(path.relative_to(ROOT / "metarl").with_suffix("").parts))
        assert source in RANKS, f"{path}: package {source!r} has no rank in RANKS"
        for module in _imports(path):
            target = _package(module)
            assert target in RANKS, f"{path} imports {module}: no rank for {target!r}"
            if RANKS[target] > RANKS[source]:
                wrong.setdefault((source, target), []).append(f"{path.relative_to(ROOT)} -> {module}")
    unexpected = {edge: where for edge, where in wrong.items() if edge not in KNOWN}
    assert not unexpected, f"imports against the layers: {unexpected}"
    stale = set(KNOWN) - set(wrong)
    assert not stale, f"KNOWN lists edges that no longer exist (remove them): {stale}"


# modules outside commands/ that still import it -> why. Empty when done.
KNOWN_COMMAND_USERS: dict[str, str] = {}


def test_only_the_cli_entry_point_imports_commands() -> None:
    offenders = []
    for folder in ("metarl", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("metarl", "commands") or rel == Path("metarl/cli.py"):
                continue
            offenders += [f"{rel} -> {m}" for m in _imports(path) if m.startswith("metarl.commands")]
    lazy = (ROOT / "metarl" / "__init__.py").read_text()
    offenders += [f"metarl/__init__.py names {line.strip()}" for line in lazy.splitlines() if '"metarl.commands' in line]
    unexpected = [line for line in offenders if line.split(" ")[0] not in KNOWN_COMMAND_USERS]
    assert not unexpected, "\n".join(unexpected)
    stale = set(KNOWN_COMMAND_USERS) - {line.split(" ")[0] for line in offenders}
    assert not stale, f"KNOWN_COMMAND_USERS lists modules that no longer import commands: {stale}"
