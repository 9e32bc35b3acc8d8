"""The documentation works: every Python example runs, every local link resolves,
every `metarl ...` command of the README exists with the flags it uses."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text()
    for block in _code_blocks(text, r"\w*"):
        text = text.replace(block, "")
    return {_slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_every_local_link_resolves() -> None:
    assert len(DOC_FILES) > 5, DOC_FILES
    broken = []
    for path in DOC_FILES:
        for target in LINK.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)


def _readme_commands() -> list[list[str]]:
    """Every `metarl ...` invocation in the README's bash blocks, as argv without 'metarl'."""
    commands = []
    for block in _code_blocks((ROOT / "README.md").read_text(), "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            for part in re.split(r"&&|;|\|", line):
                words = shlex.split(part)
                if words and words[0] == "metarl":
                    commands.append(words[1:])
    return commands


def test_readme_commands_exist_with_their_flags() -> None:
    from metarl import cli

    commands = _readme_commands()
    assert len(commands) >= 5, commands
    for argv in commands:
        found = cli._find(argv)
        assert found is not None, f"README: `metarl {' '.join(argv)}` is not a metarl command"
        words, rest = found
        out = io.StringIO()
        # tyro exits after printing a command's help; `metarl bench --help` lists the targets and returns
        try:
            with contextlib.redirect_stdout(out):
                code = cli.main([*words, "--help"])
        except SystemExit as exit_info:
            code = exit_info.code
        assert code in (0, None), f"`metarl {' '.join(words)} --help` failed"
        help_text = out.getvalue()
        for flag in (word.split("=")[0] for word in rest if word.startswith("--")):
            assert flag in help_text, f"README: `metarl {' '.join(argv)}` uses {flag}, unknown to `metarl {' '.join(words)}`"


def test_python_api_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of docs/python-api.md and the README, in order, in one namespace."""
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for path in (ROOT / "docs" / "python-api.md", ROOT / "README.md"):
            namespace: dict[str, object] = {"__name__": "__docs__"}
            blocks = _code_blocks(path.read_text(), "python")
            assert blocks, f"{path.name} has no python example"
            for index, block in enumerate(blocks):
                code = compile(block, f"{path.name}[python block {index}]", "exec")
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(code, namespace)  # noqa: S102 - the documentation's own examples
    finally:
        torch.set_num_threads(threads)


def test_load_run_names_a_config_without_a_method(tmp_path: Path) -> None:
    import json

    import metarl

    (tmp_path / "config.json").write_text(json.dumps({"family": "Point2DNav"}))
    with pytest.raises(ValueError, match="must hold an object with .method."):
        metarl.load_run(tmp_path)
