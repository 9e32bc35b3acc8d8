"""Studies: the file format, what a study directory says about its runs, and running without Ray.

The tests that start Ray are in test_study_ray.py.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from metarl.cli import main as cli_main
from metarl.core.errors import UserError
from metarl.storage.run_dir import LOCK_FILES
from metarl.studies.plan import run_state
from metarl.studies.runner import RunOptions, run_study, select_runs
from metarl.studies.spec import load_study, parse_study, shipped_studies

# The command the unseen-dynamics study's MAML runs were started with before the runner existed.
UNSEEN_DYNAMICS_MAML = ("--preset paper --nonlinearity relu --episodes-per-task 10 --horizon 200 "
                        "--iterations 200 --device cpu --threads 1")


def tiny_document(**changes: object) -> dict:
    document = {
        "name": "t", "families": ["Point2DNav"], "seeds": [0, 1],
        "evaluation": {"splits": ["test"], "num_tasks": 2, "episodes_per_step": 2, "steps": 1, "device": "cpu"},
        "methods": {
            "maml-trpo": {"train": "maml", "options": {"preset": "tiny", "iterations": 2, "device": "cpu",
                                                        "no-tensorboard": True}},
            "random-init": {"train": "random-init", "like": "maml-trpo"},
        },
    }
    document.update(changes)
    return document


def test_shipped_studies_parse_and_unseen_dynamics_adopts_the_running_maml_runs() -> None:
    assert {"tiny", "maml-paper", "unseen-dynamics"} <= set(shipped_studies())
    for name in shipped_studies():
        assert load_study(name).plans()
    spec = load_study("unseen-dynamics")
    assert [m.name for m in spec.methods] == ["maml-trpo", "pretrain", "finetune-ppo", "finetune-ppo-frozen",
                                              "random-init"]
    maml = spec.plans()[0]
    assert maml.key == "HalfCheetahRandParams/maml-trpo/seed0"
    argv = maml.train_argv(Path("/s"), resume=False)
    assert argv[:6] == ["--out", "/s/runs/HalfCheetahRandParams/maml-trpo/seed0", "--env",
                        "HalfCheetahRandParams", "--seed", "0"]
    assert argv[6:] == shlex.split(UNSEEN_DYNAMICS_MAML) + ["--no-progress"]
    # the pretrained baseline trains on MAML's environment steps: same batch, horizon, iterations and policy
    maml_config, pretrain_config = (plan.expected_config(Path("/s")) for plan in spec.plans()[:4:3])
    for key in ("iterations", "meta_batch_size", "episodes_per_task", "horizon", "policy", "maml"):
        assert maml_config[key] == pretrain_config[key], key
    assert spec.evaluation.num_tasks == 40 and spec.evaluation.episodes_per_step == 20
    assert spec.evaluation.steps == 3 and spec.evaluation.splits == ("test", "ood")
    paper = load_study("maml-paper")
    assert paper.evaluation_for("Point2DNav").episodes_per_step == 40
    assert paper.evaluation_for("HalfCheetahVel").episodes_per_step == 20


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"families": ["Nowhere"]}, "unknown family 'Nowhere'"),
        ({"seeds": [0, 0]}, "lists a seed twice"),
        ({"methods": {"m": {"train": "maml", "options": {"seed": 3}}}}, "set by the study"),
        ({"methods": {"m": {"train": "maml", "options": {"learning-rate": 3}}}}, "not a flag of `metarl train maml`"),
        ({"methods": {"m": {"train": "maml", "like": "m"}}}, "for random-init methods"),
        ({"methods": {"m": {"train": "sarsa"}}}, "must be one of maml, pretrain, finetune, random-init"),
        ({"evaluation": {"splits": ["validation"]}}, "evaluation.splits"),
        ({"evaluation": {"episodes": 3}}, "unknown key(s) ['episodes']"),
    ],
)
def test_study_file_errors_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_study(tiny_document(**change))


def test_a_run_directory_of_another_configuration_is_refused_not_overwritten(tmp_path: Path) -> None:
    spec = parse_study(tiny_document())
    study = tmp_path / "study"
    plan = spec.plans()[0]
    run = study / plan.path
    # a run made by hand with the study's options continues; one with other options is refused
    argv = plan.train_argv(study, resume=False)
    assert cli_main(["train", "maml", *argv[:argv.index("--iterations")], "--iterations", "1",
                     *argv[argv.index("--iterations") + 2:]]) == 0
    state = run_state(study, plan)
    assert state.started and not state.trained  # 1 of the study's 2 iterations: resumed by the study
    other = study / spec.plans()[1].path
    assert cli_main(["train", "maml", "--out", str(other), "--env", "Point2DNav", "--seed", "1", "--preset",
                     "tiny", "--iterations", "1", "--meta-batch-size", "3", "--device", "cpu", "--no-progress",
                     "--no-tensorboard"]) == 0
    def files() -> dict[Path, bytes]:  # writer locks aside (the study directory's is taken by the refused run)
        return {path: path.read_bytes() for path in study.rglob("*") if path.is_file() and path.name not in LOCK_FILES}

    before = files()
    with pytest.raises(UserError, match="does not match its directory.*meta_batch_size: 3 -> 10"):
        run_study(spec, study, RunOptions(progress=False))  # refused before Ray starts
    assert files() == before
    assert run.is_dir()


def test_study_without_ray_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert cli_main(["study", "run", "tiny", "--out", str(tmp_path / "s")]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "needs Ray" in error and "pip install -e '.[ray]'" in error
    assert not (tmp_path / "s").exists()


def test_every_trainer_runs_from_its_study_options_and_its_directory_then_reads_as_done(tmp_path: Path) -> None:
    from metarl.studies.runner import _train_and_evaluate

    document = tiny_document(seeds=[0])
    document["methods"] = {
        "maml-trpo": {"train": "maml", "options": {"preset": "tiny", "iterations": 1, "device": "cpu",
                                                    "no-tensorboard": True}},
        "pretrain": {"train": "pretrain", "options": {"preset": "tiny", "iterations": 1, "nonlinearity": "relu",
                                                       "horizon": 20, "device": "cpu"}},
        "finetune-ppo-frozen": {"train": "finetune", "options": {
            "timesteps": 256, "num-envs": 2, "hidden-sizes": [8, 8], "freeze": 2, "new-head": True,
            "normalize-obs": False, "device": "cpu"}},
        "random-init": {"train": "random-init", "like": "maml-trpo"},
    }
    spec = parse_study(document)
    study = tmp_path / "study"
    for plan in spec.plans():
        assert not run_state(study, plan).done(plan)
        _train_and_evaluate(plan, study, store=None)
        assert run_state(study, plan).done(plan), plan.key
    configs = {plan.method: json.loads((study / plan.path / "config.json").read_text()) for plan in spec.plans()}
    assert configs["pretrain"]["horizon"] == 20 and configs["pretrain"]["policy"]["nonlinearity"] == "relu"
    frozen = configs["finetune-ppo-frozen"]
    assert frozen["recipe"]["freeze"] == 2 and frozen["recipe"]["new_head"] is True
    assert frozen["hidden_sizes"] == [8, 8] and frozen["normalize_obs"] is False
    assert configs["random-init"]["policy"] == configs["maml-trpo"]["policy"]


def test_runs_in_flight_never_exceed_the_cluster_slots() -> None:
    from metarl.studies.runner import run_slots

    assert run_slots({"CPU": 2.0}, RunOptions(cpus_per_run=1)) == 2
    assert run_slots({"CPU": 16.0}, RunOptions(cpus_per_run=3)) == 5
    assert run_slots({"CPU": 1.0}, RunOptions(cpus_per_run=2)) == 1  # one run still goes (Ray queues it)
    assert run_slots({"CPU": 16.0, "GPU": 2.0}, RunOptions(cpus_per_run=1, gpus_per_run=1)) == 2
    assert run_slots({"CPU": 16.0}, RunOptions(cpus_per_run=1, gpus_per_run=0.5)) == 1


def test_a_study_whose_iterations_grew_extends_its_finished_runs_and_evaluates_them_again(tmp_path: Path) -> None:
    from metarl.storage.checkpoint import load_checkpoint
    from metarl.studies.runner import _train_and_evaluate

    def maml_plan(iterations: int):  # noqa: ANN202
        document = tiny_document(seeds=[0])
        document["methods"] = {"maml-trpo": {"train": "maml", "options": {
            "preset": "tiny", "iterations": iterations, "device": "cpu", "no-tensorboard": True}}}
        return parse_study(document).plans()[0]

    study = tmp_path / "study"
    short = maml_plan(1)
    _train_and_evaluate(short, study, store=None)
    run = study / short.path
    first = json.loads((run / "eval_test.json").read_text())
    longer = maml_plan(2)
    state = run_state(study, longer)
    assert state.evaluated == ("test",) and not state.trained and not state.done(longer)
    _train_and_evaluate(longer, study, store=None)
    assert load_checkpoint(run / "checkpoint" / "latest.safetensors")[1]["iteration"] == 2
    second = json.loads((run / "eval_test.json").read_text())
    # the evaluation is of the extended policy, not the one of iteration 1
    assert second["returns"]["mean"] != first["returns"]["mean"]
    assert run_state(study, longer).done(longer)


def test_a_partial_sac_fine_tuning_run_starts_over_and_a_ppo_one_resumes(tmp_path: Path) -> None:
    from metarl.studies.runner import _train_and_evaluate

    document = tiny_document(seeds=[0])
    small = {"timesteps": 256, "num-envs": 2, "hidden-sizes": [8, 8], "normalize-obs": False, "device": "cpu"}
    document["methods"] = {"sac": {"train": "finetune", "options": {"algo": "sac", **small}},
                           "ppo": {"train": "finetune", "options": {"algo": "ppo", **small}}}
    spec = parse_study(document)
    study = tmp_path / "study"
    sac, ppo = spec.plans()
    assert not sac.can_resume(study) and ppo.can_resume(study)
    for plan in (sac, ppo):  # a run stopped before its first checkpoint: the config alone
        run = study / plan.path
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(plan.expected_config(study)))
        (run / "stale.txt").write_text("from the stopped attempt")
        assert run_state(study, plan).started and not run_state(study, plan).trained
        _train_and_evaluate(plan, study, store=None)
        assert run_state(study, plan).done(plan), plan.key
    # SAC started over in a clean directory; PPO continued in its own
    assert not (study / sac.path / "stale.txt").exists() and (study / ppo.path / "stale.txt").exists()


def test_levelling_compares_the_last_tenth_of_a_training_curve_with_the_tenth_before(tmp_path: Path) -> None:
    import numpy as np

    from metarl.storage.runs import read_metrics
    from metarl.studies.report import levelling, training_curve

    assert levelling(np.arange(9.0)) is None  # too short for a tenth
    assert levelling(np.arange(40.0)) == (np.mean([32.0, 33, 34, 35]), np.mean([36.0, 37, 38, 39]))
    run = tmp_path / "maml"
    assert cli_main(["train", "maml", "--out", str(run), "--env", "Point2DNav", "--preset", "tiny", "--iterations",
                     "10", "--device", "cpu", "--no-progress", "--no-tensorboard"]) == 0
    steps, returns = training_curve(run)
    rows = read_metrics(run / "metrics.csv")
    assert returns.tolist() == [row["train/return_after_adaptation"] for row in rows]
    assert steps.tolist() == [row["train/env_steps"] for row in rows] and np.all(np.diff(steps) > 0)
    assert levelling(returns) == (returns[8], returns[9])
    assert training_curve(tmp_path / "nothing") is None


def test_report_costs_and_levelling_count_finished_runs_only(tmp_path: Path) -> None:
    from metarl.storage.checkpoint import load_checkpoint
    from metarl.studies.manifest import Manifest
    from metarl.studies.report import write_report
    from metarl.studies.runner import _train_and_evaluate

    document = tiny_document()
    document["methods"]["maml-trpo"]["options"]["iterations"] = 20
    spec = parse_study(document)
    study = tmp_path / "study"
    done, unfinished = spec.plans()[:2]
    _train_and_evaluate(done, study, store=None)
    argv = unfinished.train_argv(study, resume=False)
    argv[argv.index("--iterations") + 1] = "10"  # stopped half-way
    assert cli_main(["train", "maml", *argv]) == 0
    manifest = Manifest(study, spec, spec.plans())
    manifest.update(done.key, status="done", attempts=1, wall_seconds=30.0)
    manifest.update(unfinished.key, status="stopped", attempts=1, wall_seconds=12.0)
    manifest.write()
    text = write_report(study).read_text()
    steps = load_checkpoint(study / done.path / "checkpoint" / "latest.safetensors")[1]["env_steps"]
    row = next(line for line in text.splitlines() if line.startswith("| maml-trpo | ") and "runs)" in line)
    assert row.startswith(f"| maml-trpo | {steps:,} (1/2 runs) |") and row.endswith("| 30 (1/2 runs) | 2 |")
    levels = next(line for line in text.splitlines() if line.startswith("| maml-trpo | 1 | "))  # one finished run
    assert levels


def test_only_selects_by_family_method_or_run_and_adds_the_runs_they_are_made_like() -> None:
    document = tiny_document(families=["Point2DNav", "HalfCheetahVel"])
    plans = parse_study(document).plans()
    keys = {plan.key for plan in plans}
    assert select_runs(plans, ()) == keys
    assert select_runs(plans, ("HalfCheetahVel",)) == {key for key in keys if key.startswith("HalfCheetahVel/")}
    assert select_runs(plans, ("*/maml-trpo",)) == {key for key in keys if "/maml-trpo/" in key}
    assert select_runs(plans, ("Point2DNav/maml-trpo/seed1", "HalfCheetahVel/maml-trpo/")) == {
        "Point2DNav/maml-trpo/seed1", "HalfCheetahVel/maml-trpo/seed0", "HalfCheetahVel/maml-trpo/seed1"}
    # random-init starts from the weights of the maml-trpo run of its seed: selecting it selects that run
    assert select_runs(plans, ("Point2DNav/random-init/seed0",)) == {
        "Point2DNav/random-init/seed0", "Point2DNav/maml-trpo/seed0"}
    with pytest.raises(UserError, match=r"--only 'Point2D' matches no run.*Point2DNav, \*/maml-trpo"):
        select_runs(plans, ("HalfCheetahVel", "Point2D"))


def test_only_follows_a_chain_of_like_runs() -> None:
    document = tiny_document(seeds=[0])
    document["methods"]["again"] = {"train": "random-init", "like": "random-init"}
    try:
        plans = parse_study(document).plans()
    except UserError:
        pytest.skip("the study format does not allow a like of a like")
    assert select_runs(plans, ("*/again",)) == {
        "Point2DNav/again/seed0", "Point2DNav/random-init/seed0", "Point2DNav/maml-trpo/seed0"}


def test_one_study_run_per_directory_and_only_takes_patterns(tmp_path: Path) -> None:
    from metarl.storage.runs import run_dir_lock

    spec = parse_study(tiny_document())
    study = tmp_path / "study"
    with run_dir_lock(study), pytest.raises(UserError, match=r"study directory .*study is being written by"):
        run_study(spec, study, RunOptions(progress=False))  # refused before Ray starts
    assert not (study / "manifest.json").exists()
    with pytest.raises(UserError, match="only must be a tuple"):
        RunOptions(only="Point2DNav")


def test_sessions_record_how_they_ended_and_the_report_totals_the_study_time(tmp_path: Path) -> None:
    import datetime

    from metarl.studies.manifest import Manifest
    from metarl.studies.report import study_time_lines

    spec = parse_study(tiny_document())
    study = tmp_path / "study"
    study.mkdir()
    first = Manifest(study, spec, spec.plans())
    first.start_session(4, 1.0)
    first.write()
    # the process is killed: nothing ends its session. The next one finds it unended, and ends its own.
    second = Manifest(study, spec, spec.plans())
    second.start_session(2, 2.0)
    second.end_session("stopped")
    second.end_session("finished")  # an ended session keeps its first end
    second.write()
    sessions = json.loads((study / "manifest.json").read_text())["sessions"]
    assert [s["outcome"] for s in sessions] == ["running", "stopped"]
    assert sessions[0]["ended"] is None and sessions[0]["last_written"] and sessions[1]["ended"]
    assert sessions[1]["cpus_per_run"] == 2.0

    def at(minutes: int) -> str:
        return (datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
                + datetime.timedelta(minutes=minutes)).isoformat(timespec="seconds")

    document = {"runs": [{"wall_seconds": 5400.0}, {"wall_seconds": 1800.0}], "sessions": [
        {"started": at(0)},  # from a metarl that recorded neither ends nor runs to do
        {"started": at(100), "runs": 2, "cpus_per_run": 1.0, "last_written": at(160), "ended": None,
         "outcome": "running"},  # killed: never written again
        {"started": at(200), "runs": 2, "cpus_per_run": 1.0, "last_written": at(230), "ended": at(230),
         "outcome": "stopped"},
        {"started": at(300), "runs": 1, "cpus_per_run": 1.0, "last_written": at(390), "ended": None,
         "outcome": "running"},
    ]}
    now = datetime.datetime.fromisoformat(at(391)).replace(tzinfo=None)  # a naive time is taken as UTC
    text = "\n".join(study_time_lines(document, now))
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[2] for row in rows] == ["–", "1:00", "0:30", "1:30"]
    assert [row.split(" | ")[3] for row in rows] == ["–", "2", "2", "1"]  # runs to do
    assert [row.rstrip(" |").rsplit("| ", 1)[1] for row in rows] == ["not recorded", "killed", "stopped", "running"]
    assert ("4 sessions (1 stopped, 1 killed, 1 running, 1 not recorded): the study was continued 3 times. "
            "Wall-clock: 3.00 h over the 3 of 4 sessions that recorded it.") in text
    assert "Task time, the sum of every run's wall-clock over all its attempts: 2.00 h." in text
    assert "CPU-hours" not in text  # the first session's CPUs per run are unknown
    # an hour later the last session has not written either: it was killed, not running
    later = "\n".join(study_time_lines(document, now + datetime.timedelta(hours=1)))
    assert "2 killed" in later and "running" not in later.split("how it ended")[1]
    document["sessions"] = document["sessions"][1:]
    assert "With 1 CPU per run in every session, 2.00 CPU-hours." in "\n".join(study_time_lines(document, now))


@pytest.mark.parametrize("recorded", [True, False], ids=["document-records-its-checkpoint", "older-document"])
def test_a_run_stopped_between_its_extension_and_its_evaluation_is_evaluated_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: bool
) -> None:
    from metarl.evaluation.compare import compare_runs
    from metarl.evaluation.protocol import evaluated_checkpoint
    from metarl.evaluation.results import record_evaluated_checkpoint, stale_evaluation
    from metarl.methods import dispatch
    from metarl.storage.runs import RunDir
    from metarl.studies.manifest import Manifest
    from metarl.studies.report import method_results
    from metarl.studies.runner import _train_and_evaluate

    def maml_study(iterations: int):  # noqa: ANN202
        document = tiny_document(seeds=[0])
        document["methods"] = {"maml-trpo": {"train": "maml", "options": {
            "preset": "tiny", "iterations": iterations, "device": "cpu", "no-tensorboard": True}}}
        return parse_study(document)

    study = tmp_path / "study"
    short = maml_study(1).plans()[0]
    _train_and_evaluate(short, study, store=None)
    run = study / short.path
    document = json.loads((run / "eval_test.json").read_text())
    assert document["trained_iteration"] == 1 and document["trained_env_steps"] > 0
    if not recorded:  # as written before evaluations recorded their checkpoint
        del document["trained_iteration"], document["trained_env_steps"]
        (run / "eval_test.json").write_text(json.dumps(document))
    assert stale_evaluation(run, "test") is None

    spec = maml_study(2)
    longer = spec.plans()[0]
    real_evaluate = dispatch.evaluate_run

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the machine stops once the extended training has ended

    monkeypatch.setattr(dispatch, "evaluate_run", killed)
    with pytest.raises(KeyboardInterrupt):
        _train_and_evaluate(longer, study, store=None)
    state = run_state(study, longer)
    assert state.trained and state.evaluated == () and not state.done(longer)  # not taken as finished
    reason = stale_evaluation(run, "test")
    assert reason is not None and "iteration 1" in reason and "iteration 2" in reason
    manifest = Manifest(study, spec, spec.plans()).document
    rows, left_out = method_results(study, manifest, "Point2DNav", "test")
    assert rows == [] and left_out == [f"{longer.key} ({reason})"]
    table, _ = compare_runs([run], "test", tmp_path / "compare")
    assert "Evaluated before the run was trained further" in table and reason in table

    checkpoint = run / "checkpoint" / "latest.safetensors"
    kept = checkpoint.read_bytes()
    checkpoint.unlink()  # a run whose checkpoint was removed: nothing to tell, not stale
    assert stale_evaluation(run, "test") is None
    checkpoint.write_bytes(kept[: len(kept) // 2])  # damaged: neither stale nor a crash, nor marked
    assert stale_evaluation(run, "test") is None and record_evaluated_checkpoint(run) == []
    assert evaluated_checkpoint(RunDir(run)) == (None, None)  # an evaluation is still written, unmarked
    checkpoint.write_bytes(kept)

    monkeypatch.setattr(dispatch, "evaluate_run", real_evaluate)
    _train_and_evaluate(longer, study, store=None)
    assert json.loads((run / "eval_test.json").read_text())["trained_iteration"] == 2
    assert run_state(study, longer).done(longer) and stale_evaluation(run, "test") is None
