"""One writer per run directory: the lock, its PID message, stale locks, and two trainings at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from metarl import cli
from metarl.storage.runs import LOCK_PID_NAME, RunDirLockedError, read_metrics, run_dir_lock

TINY = ["--env", "Point2DNav", "--preset", "tiny", "--iterations", "2", "--meta-batch-size", "2",
        "--episodes-per-task", "2", "--horizon", "10", "--hidden-sizes", "8", "--no-progress",
        "--no-tensorboard", "--device", "cpu"]

_HOLDER = textwrap.dedent("""
    import sys, time
    from metarl.storage.runs import run_dir_lock
    with run_dir_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def _start_holder(directory: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_second_writer_gets_one_line_naming_the_holders_pid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    holder = _start_holder(out)
    try:
        with pytest.raises(RunDirLockedError, match=f"PID {holder.pid}"):
            with run_dir_lock(out):
                pass
        assert cli.main(["train", "maml", "--out", str(out), *TINY]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert f"PID {holder.pid}" in err and str(out) in err
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "config.json").exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = _start_holder(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (out / LOCK_PID_NAME).read_text().strip() == str(holder.pid)  # stale PID left behind
    with run_dir_lock(out):
        assert (out / LOCK_PID_NAME).read_text().strip() == str(os.getpid())
    assert cli.main(["train", "maml", "--out", str(out), *TINY]) == 0
    assert [row["iteration"] for row in read_metrics(out / "metrics.csv")] == [1, 2]


_RACER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from metarl import cli                       # every import done before the start line
    import metarl.commands.train_maml  # noqa: F401
    root, name, trials = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    flags = json.loads(sys.argv[4])
    codes = []
    for trial in range(trials):
        (root / f"ready-{trial}-{name}").touch()
        while not all((root / f"ready-{trial}-{who}").exists() for who in ("a", "b")):
            pass  # spin: both leave the barrier within microseconds of each other
        codes.append(cli.main(["train", "maml", "--out", str(root / f"run-{trial}"), *flags]))
    print(json.dumps({"pid": os.getpid(), "codes": codes}), flush=True)
""")


@pytest.mark.slow
def test_two_trainings_started_at_the_same_instant_never_share_a_run(tmp_path: Path) -> None:
    """10 trials of two processes released by a barrier at once: exactly one trains each run."""
    import json

    trials = 10
    racers = {
        name: subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), name, str(trials), json.dumps(TINY)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    }
    results = {}
    for name, racer in racers.items():
        stdout, stderr = racer.communicate(timeout=300)
        assert racer.returncode == 0, stderr
        results[name] = (json.loads(stdout.strip().splitlines()[-1]), stderr)
    pids = {name: result["pid"] for name, (result, _) in results.items()}
    for trial in range(trials):
        codes = sorted(results[name][0]["codes"][trial] for name in ("a", "b"))
        assert codes == [0, 2], (trial, codes)
        rows = read_metrics(tmp_path / f"run-{trial}" / "metrics.csv")
        assert [row["iteration"] for row in rows] == [1, 2]
    for name, (_, stderr) in results.items():
        other = pids["b" if name == "a" else "a"]
        for line in stderr.splitlines():
            if "error" in line:
                # either it was refused while the other held the lock, or it came second and found the run
                assert f"PID {other}" in line or "already holds this run" in line, line
    assert any(f"PID {pids['b' if n == 'a' else 'a']}" in results[n][1] for n in ("a", "b"))
