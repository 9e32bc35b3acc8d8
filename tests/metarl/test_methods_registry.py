"""The method registry (docs/design.md, "Methods"): every built-in entry resolves, words are unique,
and the entries stop naming metarl.commands as each method's training leaves commands/."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from metarl import methods
from metarl.core.errors import UserError

BUILTINS = ("maml", "pretrain", "finetune", "protonet", "random_init")
FIELDS = ("train_args", "train", "evaluate", "policies")
# built-in methods whose entry still names a metarl.commands module -> why. Shrinks to empty; the test
# fails on a stale entry.
KNOWN_COMMAND_TARGETS: dict[str, str] = {
}


def test_every_builtin_target_resolves() -> None:
    registered = {method.name: method for method in methods.methods()}
    assert set(BUILTINS) <= set(registered)
    for name in BUILTINS:
        method = registered[name]
        assert methods.get(name) is method and methods.by_train_word(method.train_word) is method
        assert dataclasses.is_dataclass(method.load("train_args")), name
        assert callable(method.load("train")) and callable(method.load("evaluate")), name
        if method.policies is not None:
            assert callable(method.load("policies")), name
        else:
            assert method.kind == "identification", f"{name}: no policy to render, yet not an identification method"


def test_names_and_train_words_are_unique() -> None:
    registered = methods.methods()
    assert len({m.name for m in registered}) == len(registered)
    assert len({m.train_word for m in registered}) == len(registered)


def test_no_builtin_names_a_commands_module_beyond_the_known_ones() -> None:
    pointing = {
        method.name
        for method in methods.methods() if method.name in BUILTINS
        for field in FIELDS
        if (getattr(method, field) or "").startswith("metarl.commands.")
    }
    assert pointing <= set(KNOWN_COMMAND_TARGETS), f"entries naming metarl.commands: {sorted(pointing)}"
    stale = set(KNOWN_COMMAND_TARGETS) - pointing
    assert not stale, f"KNOWN_COMMAND_TARGETS lists methods that no longer name metarl.commands (remove them): {stale}"


def test_looking_methods_up_imports_neither_torch_nor_their_code() -> None:
    code = ("import sys\nfrom metarl import methods\nmethods.methods()\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'stable_baselines3'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lookups_and_registration_name_what_is_wrong() -> None:
    with pytest.raises(UserError, match="unknown method 'dqn'; known methods: .*maml"):
        methods.get("dqn")
    with pytest.raises(UserError, match="unknown training command 'dqn'; metarl train takes: maml"):
        methods.by_train_word("dqn")
    maml = methods.get("maml")
    with pytest.raises(ValueError, match="clashes with the registered method 'maml'"):
        methods.register(dataclasses.replace(maml, name="maml2"))  # the same train word
    with pytest.raises(TypeError, match="takes a metarl.methods.Method"):
        methods.register("maml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Method.evaluate must be 'module:attribute'"):
        dataclasses.replace(maml, evaluate="metarl.evaluation.protocol.evaluate_maml_run")
    with pytest.raises(ValueError, match="Method.kind must be"):
        dataclasses.replace(maml, kind="bandit")
    with pytest.raises(UserError, match="method 'protonet' has no policies"):
        methods.get("protonet").load("policies")
