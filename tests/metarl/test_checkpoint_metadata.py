"""The checkpoint digest covers the metadata; every field is checked when read; resumes never go
backwards or skip; checkpoints of format 1 (digest of the tensors only) still resume."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_save

from metarl import cli
from metarl.storage.checkpoint import (
    FORMAT,
    CheckpointError,
    _digest,
    load_checkpoint,
    save_checkpoint,
)
from metarl.storage.runs import read_metrics

FLAGS = ["--env", "Point2DNav", "--preset", "tiny", "--meta-batch-size", "2", "--episodes-per-task", "2",
         "--horizon", "10", "--hidden-sizes", "8", "--no-progress", "--no-tensorboard", "--device", "cpu",
         "--outer", "promp", "--promp-steps", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main(["train", "maml", "--out", str(out), "--iterations", "2", *FLAGS]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def _resume(out: Path, iterations: int, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["train", "maml", "--out", str(out), "--resume", "--iterations", str(iterations), *FLAGS])
    return code, capsys.readouterr().err


def _assert_one_line(err: str, *needles: str) -> None:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def _rewrite(path: Path, change) -> None:
    """Re-save the checkpoint with ``change(metadata)`` applied, digest recomputed (a crafted file)."""
    tensors, metadata = load_checkpoint(path)
    change(metadata)
    save_checkpoint(path, tensors, metadata)


def test_same_length_edits_of_the_header_are_refused(trained: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = _copy(trained, tmp_path)
    path = out / "checkpoint" / "latest.safetensors"
    data = path.read_bytes()
    key = b'iteration\\": 2,'  # inside the header's JSON string
    assert data.count(key) == 1
    path.write_bytes(data.replace(key, key.replace(b"2", b"9")))
    before = (out / "config.json").read_bytes()
    code, err = _resume(out, 3, capsys)
    assert code == 2 and (out / "config.json").read_bytes() == before
    _assert_one_line(err, "corrupted or was edited", str(path))
    # one digit of the task generator's state
    state = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])["__metadata__"]["metarl"]
    digits = str(json.loads(state)["rng_tasks"]["state"]["state"])
    edited = digits[:-1] + ("1" if digits[-1] != "1" else "2")
    path.write_bytes(data.replace(digits.encode(), edited.encode()))
    code, err = _resume(out, 3, capsys)
    assert code == 2
    _assert_one_line(err, "corrupted or was edited")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m.update(iteration=None), "'iteration' must be an integer >= 0"),
        (lambda m: m.update(iteration=-100), "'iteration' must be an integer >= 0"),
        (lambda m: m.update(iteration=True), "'iteration' must be an integer >= 0"),
        (lambda m: m.update(env_steps=1.5), "'env_steps'"),
        (lambda m: m.update(train_seconds="soon"), "'train_seconds'"),
        (lambda m: m.update(obs_dim=10**12), "'obs_dim'"),
        (lambda m: m.update(family=["Point2DNav"]), "'family' must be a string"),
        (lambda m: m.update(learner_state={"__tensor__": "policy.log_std"}), "'learner_state'"),
        (lambda m: m.update(learner_state={"__dict__": [["x", 1]]}), "'learner_state'"),
        (lambda m: m.update(rng_tasks={"bit_generator": "PCG64", "state": None}), "'rng_tasks'"),
        (lambda m: m.update(rng_tasks=[1, 2]), "'rng_tasks'"),
    ],
)
def test_crafted_metadata_gives_one_line_naming_the_field(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change, field: str
) -> None:
    out = _copy(trained, tmp_path)
    _rewrite(out / "checkpoint" / "latest.safetensors", change)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, err = _resume(out, 3, capsys)
    assert code == 2
    _assert_one_line(err, field)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_deeply_nested_header_is_refused(tmp_path: Path) -> None:
    nested = "[" * 50_000 + "]" * 50_000
    text = (f'{{"format": "{FORMAT}", "version": 2, "family": "Point2DNav", "obs_dim": 2, "act_dim": 2, '
            f'"learner_state": {nested}, "sha256": "0"}}')
    path = tmp_path / "deep.safetensors"
    path.write_bytes(safetensors_save({"x": torch.zeros(1)}, metadata={"metarl": text}))
    with pytest.raises(CheckpointError, match="nests deeper than"):
        load_checkpoint(path)


def test_a_resume_that_would_go_backwards_or_skip_is_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy(trained, tmp_path)
    config = (out / "config.json").read_bytes()
    code, err = _resume(out, 1, capsys)
    assert code == 2 and (out / "config.json").read_bytes() == config
    _assert_one_line(err, "--iterations 1 is below the 2 iterations")
    _rewrite(out / "checkpoint" / "latest.safetensors", lambda m: m.update(iteration=9))
    code, err = _resume(out, 12, capsys)
    assert code == 2 and (out / "config.json").read_bytes() == config
    _assert_one_line(err, "at iteration 9", "ends at iteration 2", "skip")


def test_resume_with_the_checkpoint_deleted_is_refused(trained: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = _copy(trained, tmp_path)
    (out / "checkpoint" / "latest.safetensors").unlink()
    code, err = _resume(out, 3, capsys)
    assert code == 2
    _assert_one_line(err, "latest.safetensors is missing", "records 2 completed iterations")
    assert [row["iteration"] for row in read_metrics(out / "metrics.csv")] == [1, 2]


def test_garbage_metrics_names_the_file_and_nothing_is_rewritten(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy(trained, tmp_path)
    for garbage in (b"\xff\xfe\x00garbage\n", b"iteration,train/return\n1,abc\n"):
        (out / "metrics.csv").write_bytes(garbage)
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        code, err = _resume(out, 3, capsys)
        assert code == 2
        _assert_one_line(err, str(out / "metrics.csv"))
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_format_1_checkpoint_still_resumes_and_is_upgraded(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs written before the metadata digest (format 1) keep resuming; the next save is format 2."""
    out = _copy(trained, tmp_path)
    path = out / "checkpoint" / "latest.safetensors"
    tensors, metadata = load_checkpoint(path)
    document = {"format": FORMAT, "version": 1, **metadata, "sha256": _digest(tensors)}
    path.write_bytes(safetensors_save(tensors, metadata={"metarl": json.dumps(document, sort_keys=True)}))
    assert load_checkpoint(path)[1]["iteration"] == 2
    code, err = _resume(out, 3, capsys)
    assert code == 0, err
    header = path.read_bytes()
    size = struct.unpack("<Q", header[:8])[0]
    assert json.loads(json.loads(header[8:8 + size])["__metadata__"]["metarl"])["version"] == 2
    # format 1 still guards its tensors
    tensors, metadata = load_checkpoint(path)
    document = {"format": FORMAT, "version": 1, **metadata, "sha256": "0" * 64}
    path.write_bytes(safetensors_save(tensors, metadata={"metarl": json.dumps(document)}))
    with pytest.raises(CheckpointError, match="tensor data does not match"):
        load_checkpoint(path)
