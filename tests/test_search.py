"""Search on Optuna: random then grid, budgets, the median pruner, workers sharing a study (SQLite and a real
PostgreSQL), a killed worker, the test split unreachable."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.stages import clean, split, train
from pipelines.training import fitting, search, tuning
from tests.conftest import tiny_config

SPACE = {"train.learning_rate": config_module.ParamSpace(kind="log_uniform", low=1e-4, high=1e-1),
         "model.dense_units": config_module.ParamSpace(kind="int", low=8, high=64),
         "train.optimizer": config_module.ParamSpace(kind="choice", values=("adam", "sgd"))}


def test_grid_spans_the_top_trials_region():
    top = [{"train.learning_rate": 1e-3, "model.dense_units": 10, "train.optimizer": "adam"},
           {"train.learning_rate": 1e-2, "model.dense_units": 20, "train.optimizer": "adam"}]
    grid = search.grid_around(SPACE, top, 3)
    rates = sorted({params["train.learning_rate"] for params in grid})
    assert rates == pytest.approx([1e-3, np.sqrt(1e-5), 1e-2])  # log-spaced for a log-uniform parameter
    assert sorted({params["model.dense_units"] for params in grid}) == [10, 15, 20]
    assert {params["train.optimizer"] for params in grid} == {"adam"} and len(grid) == 9
    top[1]["train.optimizer"] = "sgd"  # the top trials disagree: both stay
    assert {params["train.optimizer"] for params in search.grid_around(SPACE, top, 2)} == {"adam", "sgd"}
    filters = {**SPACE, "model.filters": config_module.ParamSpace(kind="choice", values=((8, 16), (16, 32)))}
    lists = [{**top[0], "model.filters": [8, 16]}, {**top[1], "model.filters": [8, 16]}]
    assert [params["model.filters"] for params in search.grid_around(filters, lists, 2)] == [[8, 16]] * 8
    lists[1]["model.filters"] = [16, 32]  # the top trials disagree: both lists stay, in the order first seen
    seen = [params["model.filters"] for params in search.grid_around(filters, lists, 2)]
    assert len(seen) == 16 and sorted({tuple(value) for value in seen}) == [(8, 16), (16, 32)]


def test_median_pruner_stops_a_trial_below_the_median_after_warmup(tmp_path):
    study = search.open_study(f"sqlite:///{tmp_path / 'optuna.db'}", "s", higher=True, prune_warmup=2)
    for curve in ([0.5, 0.8, 0.9], [0.4, 0.7, 0.85], [0.6, 0.9, 0.95]):
        trial = study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    report = search._Report(study.ask(), fitting.objective("classification"))

    class Model:
        stop_training = False

    report.set_model(Model())
    report.on_epoch_end(0, {"val_accuracy": 0.1})  # warm-up: never pruned
    assert report.pruned_at is None
    report.on_epoch_end(1, {"val_accuracy": 0.75})  # median at epoch 2 is 0.8
    assert report.pruned_at == 2 and report.model.stop_training


_ONE_WORKER = """
import json, sys, time
from pathlib import Path
from optuna.trial import TrialState
from pipelines.training import search

url, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
study = search.open_study(url, name, higher=True, prune_warmup=0)
ran = []

def stub(trial, *args):
    ran.append(trial.suggest_int("point", 0, 10_000))
    return 0.0

search.run_trial = stub
while not go.exists():
    time.sleep(0.01)
search.work(study, None, None, None, lambda: not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
print(json.dumps(ran))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_workers_asking_at_once_never_take_a_trial_twice(tmp_path, backend, request):
    """Three worker processes on one queue of 90 instant trials (the claim is all they do): every trial runs
    once. Without open_study's BEGIN IMMEDIATE, SQLite handed 17 of 300 trials out twice to three processes."""
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'o.db'}"
    name = f"claims-{tmp_path.name}"
    study = search.open_study(url, name, higher=True, prune_warmup=0)
    for point in range(90):
        study.enqueue_trial({"point": point}, user_attrs={"phase": "random"})
    go = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", _ONE_WORKER, url, name, str(go)], stdout=subprocess.PIPE,
                                text=True) for _ in range(3)]
    time.sleep(1)
    go.touch()
    ran = [point for worker in workers for point in yaml.safe_load(worker.communicate(timeout=300)[0])]
    assert all(worker.returncode == 0 for worker in workers)
    assert sorted(ran) == list(range(90))  # each planned trial once, none twice
    trials = study.get_trials()
    assert sorted(trial.params["point"] for trial in trials if trial.state == TrialState.COMPLETE) == sorted(ran)
    assert all(trial.user_attrs.get("unplanned") and not trial.params
               for trial in trials if trial.state != TrialState.COMPLETE)  # made by `ask` at the end, unrun


def _queue(tmp_path, *rates):
    study = search.open_study(f"sqlite:///{tmp_path / 'optuna.db'}", "s", higher=True, prune_warmup=0)
    search.plan(study, "random", [{"train.learning_rate": rate} for rate in rates], SPACE)
    return study


def _until_empty(study):
    return not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))


def _stub(trial, *args):
    trial.set_user_attr("seconds", 0.0)
    return trial.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True)


def test_a_trial_taken_by_a_worker_killed_before_its_first_heartbeat_is_retried(tmp_path, monkeypatch):
    study = _queue(tmp_path, 0.01)
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna's heartbeats start in `optimize`, after `ask`
        study.ask()  # taken; the worker dies before `optimize` starts its heartbeat thread
    search.fail_stale(study)
    assert [trial.state for trial in study.get_trials()] == [TrialState.RUNNING]  # within the grace period
    monkeypatch.setattr(search, "GRACE_SECONDS", 0)
    search.fail_stale(study)
    taken, retry = study.get_trials()
    assert taken.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.user_attrs["phase"] == "random" and retry.system_attrs["failed_trial"] == taken.number
    monkeypatch.setattr(search, "run_trial", _stub)
    assert search.work(study, None, None, None, lambda: _until_empty(study)) == 1
    assert study.get_trials()[-1].params == {"train.learning_rate": 0.01}


def test_a_trial_has_its_heartbeat_before_it_is_marked_as_a_workers(tmp_path, monkeypatch):
    """Optuna's first heartbeat comes from a thread; here that thread never beats (as under load, when it runs
    late), and a worker killed while it runs the trial still leaves a heartbeat for `fail_stale_trials`."""
    import sqlalchemy

    study = _queue(tmp_path, 0.01)
    monkeypatch.setattr(optuna.storages._heartbeat.HeartbeatThread, "start", lambda self: None)
    monkeypatch.setattr(optuna.storages._heartbeat.HeartbeatThread, "join", lambda self: None)
    seen = []

    def killed(trial, *args):  # the worker "dies" here: what would the storage hold?
        with sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'optuna.db'}").connect() as connection:
            seen.append(connection.exec_driver_sql("SELECT count(*) FROM trial_heartbeats").scalar())
        seen.append(trial.user_attrs.get("worker"))
        return _stub(trial)

    monkeypatch.setattr(search, "run_trial", killed)
    assert search.work(study, None, None, None, lambda: _until_empty(study)) == 1
    assert seen[0] == 1 and seen[1]  # the beat is there, and so is the worker mark it precedes


def test_a_worker_whose_trial_was_taken_for_dead_goes_on_with_the_next(tmp_path, monkeypatch, capsys):
    study = _queue(tmp_path, 0.01, 0.02)

    def stalled(trial, *args):
        if trial.number == 0:  # silent past the grace period: another worker failed it and enqueued it again
            search._retry(study, study.tell(trial.number, state=TrialState.FAIL))
        return _stub(trial)

    monkeypatch.setattr(search, "run_trial", stalled)
    assert search.work(study, None, None, None, lambda: _until_empty(study)) == 2  # the second, the retry
    assert [trial.state for trial in study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE,
                                                             TrialState.COMPLETE]
    assert study.get_trials()[2].params == {"train.learning_rate": 0.01}
    assert "trial 0 was taken for dead" in capsys.readouterr().out


def _search_config(root, folds: int = 0, **search_settings):
    tree = config_module.to_dict(tiny_config(root))
    tree["split"]["folds"] = folds
    tree["search"].update({"space": {"train.learning_rate": {"kind": "log_uniform", "low": 1e-4, "high": 1e-1}},
                           **search_settings})
    return config_module.from_dict(tree)


def _prepared(root, **search_settings):
    """A tiny config with its clean, split and train stages done (what tune reads)."""
    config = _search_config(root, **search_settings)
    for stage in (clean, split, train):
        stage.run(config)
    return config


def _grid_keys(trials):
    return [search.key(trial["params"]) for trial in trials if trial["phase"] == "grid"]


@pytest.mark.slow
def test_the_search_plans_both_phases_once_and_keeps_the_budget(tmp_path, capsys):
    config = _prepared(tmp_path, n_trials=3, grid_points=6, top_k=2, max_trials=6, epochs=1)
    trials = tuning.search_trials(tuning.Search(config))
    assert len(trials) == 6 and [trial["phase"] for trial in trials].count("random") == 3
    assert len(set(_grid_keys(trials))) == len(_grid_keys(trials)) == 3  # no grid point twice
    assert "budget reached (6 trials)" in capsys.readouterr().out
    study = optuna.load_study(study_name=tuning.Search(config).name, storage=tuning.Search(config).url)
    assert study.user_attrs["closed"] and study.user_attrs["planned:random"] == 3
    assert all(trial["params"] == tuning.sample(config.search)[index]
               for index, trial in enumerate(sorted(trials, key=lambda t: t["number"])[:3]))
    again = tuning.search_trials(tuning.Search(config))  # finished: its trials stand, nothing runs again
    assert [trial["number"] for trial in again] == [trial["number"] for trial in trials]
    assert "finished earlier: its 6 trial(s) stand" in capsys.readouterr().out
    fresh = tuning.search_trials(tuning.Search(config), fresh=True)  # forced: a new study, the same plan
    assert [trial["params"] for trial in fresh][:3] == [trial["params"] for trial in trials][:3]


@pytest.mark.slow
def test_real_search_never_reads_the_test_split(tmp_path, monkeypatch):
    config = _prepared(tmp_path, n_trials=2, grid_points=0, epochs=2)
    real_load = workspace.load_arrays

    def guarded(folder, prefix, *names, **options):
        assert prefix != "test", "the search read the test split"
        return real_load(folder, prefix, *names, **options)

    monkeypatch.setattr(workspace, "load_arrays", guarded)
    trials = tuning.search_trials(tuning.Search(config))
    assert len(trials) == 2 and all(0 <= trial["val/accuracy"] <= 1 and trial["curve"] for trial in trials)
    assert all(trial["epochs"] <= 2 and trial["state"] == "complete" for trial in trials)


def test_grid_runs_nearest_the_best_trial_first():
    space = {"train.learning_rate": SPACE["train.learning_rate"]}
    plan = [{"train.learning_rate": value} for value in (1e-4, 1e-3, 3e-3, 1e-1)]
    ordered = search.nearest_first(space, plan, {"train.learning_rate": 2e-3})
    assert [params["train.learning_rate"] for params in ordered] == [3e-3, 1e-3, 1e-4, 1e-1]


@pytest.mark.slow
def test_cross_validated_objective_reports_mean_and_spread_over_the_folds(tmp_path):
    config = _search_config(tmp_path, folds=3, n_trials=1, objective="cv", epochs=1)
    for stage in (clean, split, train):
        stage.run(config)
    trials = tuning.search_trials(tuning.Search(config))
    assert len(trials) == 1 and len(trials[0]["fold_scores"]) == 3
    assert trials[0]["val/accuracy"] == pytest.approx(np.mean(trials[0]["fold_scores"]))
    assert trials[0]["spread"] == pytest.approx(np.std(trials[0]["fold_scores"]))


def test_augmentation_strength_scales_every_probability():
    from pipelines.data import augment

    settings = config_module.AugmentConfig(transforms=({"name": "HorizontalFlip"}, {"name": "Blur", "p": 0.8}),
                                           strength=1.5)
    compose = augment.build(settings)
    assert [transform.p for transform in compose.transforms] == [0.75, 1.0]


def _study(config):
    job = tuning.Search(config)
    return optuna.load_study(study_name=job.name, storage=job.url)


def _wait(condition, timeout=300, what="a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _finished_by(study, worker_pids):
    return [trial for trial in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
            if int(trial.user_attrs["worker"].rsplit(":", 1)[1]) in worker_pids]


def _running_in(study, pid):
    return any(trial.user_attrs.get("worker", ":0").endswith(f":{pid}")
               for trial in study.get_trials(states=(TrialState.RUNNING,)))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_share_a_study_and_a_kill_loses_only_the_running_trials(tmp_path, backend, request):
    """The tune stage and a `tune-worker` on one study; both are SIGKILLed mid-trial; a rerun finishes the
    study: exactly the planned trials, no point run twice, only the two running trials lost (and retried)."""
    storage = request.getfixturevalue("postgres_url") if backend == "postgresql" else ""
    config = _prepared(tmp_path, n_trials=6, grid_points=5, top_k=2, max_trials=0, sampler="random", epochs=12,
                       storage=storage)
    resolved = tmp_path / "search.yaml"
    resolved.write_text(yaml.safe_dump(config_module.to_dict(config), sort_keys=False))
    command = [sys.executable, "-m", "pipelines"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    coordinator = subprocess.Popen([*command, "tune", "--config", str(resolved)], **quiet)
    job = tuning.Search(config)
    _wait(lambda: job.name in [s.study_name for s in optuna.get_all_study_summaries(job.url)], what="the study")
    worker = subprocess.Popen([*command, "tune-worker", "--config", str(resolved)], **quiet)
    try:
        study = _study(config)
        _wait(lambda: _finished_by(study, {worker.pid}) and _running_in(study, worker.pid), what="the worker")
        worker.send_signal(signal.SIGKILL)
        _wait(lambda: _finished_by(study, {coordinator.pid}) and _running_in(study, coordinator.pid),
              what="the coordinator")
        coordinator.send_signal(signal.SIGKILL)
        worker.wait(), coordinator.wait()
    finally:
        for process in (worker, coordinator):
            process.kill()
    before = {trial.number: trial.params for trial in _finished_by(study, {worker.pid, coordinator.pid})}
    assert {trial.state for trial in study.get_trials(states=(TrialState.RUNNING,))} == {TrialState.RUNNING}

    rerun = subprocess.run([*command, "tune", "--config", str(resolved)], capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    trials = study.get_trials()
    finished = [trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    planned = study.user_attrs["planned:random"] + study.user_attrs["planned:grid"]
    assert len(finished) == planned  # together, exactly the plan
    assert len({search.key(trial.params) for trial in finished}) == len(finished)  # nothing ran twice
    assert all(trial.params == before[trial.number] for trial in finished if trial.number in before)
    unplanned = [trial for trial in trials if trial.user_attrs.get("unplanned")]
    assert all(trial.state == TrialState.FAIL and not trial.params for trial in unplanned)  # made by ask, unrun
    lost = [trial for trial in trials if trial.state == TrialState.FAIL and trial not in unplanned]
    assert len(lost) == 2  # the two trials running at the kills, and nothing else
    assert {search.key(trial.params) for trial in lost} <= {search.key(trial.params) for trial in finished}
    assert not [trial for trial in trials if trial.state in (TrialState.WAITING, TrialState.RUNNING)]
    report = workspace.read_json(workspace.stage_dir(tmp_path, config.experiment, "tune") / "trials.json")
    assert len(report["trials"]) == planned and report["study"] == job.name


@pytest.mark.slow
def test_n_jobs_starts_local_workers_that_share_the_plan(tmp_path):
    config = _prepared(tmp_path, n_trials=6, grid_points=0, max_trials=0, sampler="random", epochs=6, n_jobs=2)
    trials = tuning.search_trials(tuning.Search(config))
    assert len(trials) == 6 and len({search.key(trial["params"]) for trial in trials}) == 6
    assert len({trial["worker"] for trial in trials}) == 2  # this process and the one it started
    logs = list(tmp_path.glob("**/.backup/tune-*/worker-0.log"))
    assert logs and "[tune-worker] ran" in logs[0].read_text()
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # two processes share the cores: TF's pools get half each
    assert f"thread pools: intra-op {share}, inter-op {share}" in logs[0].read_text()


def test_local_workers_get_their_share_of_the_cores_unless_the_user_set_the_threads(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(tuning.subprocess, "Popen", lambda command, **kwargs: started.append(kwargs["env"]))
    monkeypatch.setattr(tuning.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    config = tiny_config(tmp_path)
    tuning.local_workers(config, 3, tmp_path / "workers")  # four processes with the stage's own
    assert len(started) == 3
    assert {(env["TF_NUM_INTRAOP_THREADS"], env["TF_NUM_INTEROP_THREADS"]) for env in started} == {("2", "2")}
    assert tuning.worker_threads(16)["TF_NUM_INTRAOP_THREADS"] == "1"  # never fewer than one
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    started.clear()
    tuning.local_workers(config, 1, tmp_path / "workers")
    assert started[0]["TF_NUM_INTRAOP_THREADS"] == "3" and started[0]["TF_NUM_INTEROP_THREADS"] == "4"


def test_a_tune_worker_without_a_running_search_says_so(tmp_path):
    from pipelines.core.errors import StageError

    config = _prepared(tmp_path, n_trials=1, epochs=1)
    with pytest.raises(StageError, match="start `make tune` first"):
        tuning.work(config, idle_seconds=1)


def _formula_trial(trial, config, split_folder, digest):
    """A trial without training: its score is a formula of the parameters (best at learning rate 10^-2.5)."""
    params = {path: search._suggest(trial, path, distribution)
              for path, distribution in search.distributions(config.search.space).items()}
    trial.set_user_attr("seconds", 0.0)
    return 1.0 - abs(np.log10(params["train.learning_rate"]) + 2.5) - abs(params.get("model.dropout_rate", 0) - 0.2)


def test_by_default_the_search_runs_random_then_grid_and_one_random_trial_stays_one(tmp_path, monkeypatch):
    """The course's recipe is the default: 5 trials spread by a Sobol sequence, then the grid around the best 2, 9
    in all."""
    space = {"train.learning_rate": {"kind": "log_uniform", "low": 1e-4, "high": 1e-1},
             "model.dropout_rate": {"kind": "uniform", "low": 0.0, "high": 0.5}}
    monkeypatch.setattr(search, "run_trial", _formula_trial)
    config = _prepared(tmp_path, epochs=1, space=space)
    config = config_module.replace_path(config, "search.n_trials", config_module.SearchConfig().n_trials)
    assert config.search.sampler == "qmc"
    phases = [trial["phase"] for trial in tuning.search_trials(tuning.Search(config))]
    assert (phases.count("random"), phases.count("grid")) == (5, 4)
    one = config_module.replace_path(config, "search.n_trials", 1)
    assert [trial["phase"] for trial in tuning.search_trials(tuning.Search(one))] == ["random"]


@pytest.mark.slow
def test_an_interrupted_search_resumes_without_redoing_finished_trials(tmp_path, monkeypatch):
    """Ctrl-C in the middle of a trial: the study stays open, the trial goes back to the queue, and the rerun
    runs only what is left (no training here: the objective is a formula of the learning rate)."""
    config = _prepared(tmp_path, n_trials=4, grid_points=4, top_k=2, epochs=1)
    calls = []

    def fake_trial(trial, config, split_folder, digest, interrupt_at=None):
        params = {path: search._suggest(trial, path, distribution)
                  for path, distribution in search.distributions(config.search.space).items()}
        calls.append(search.key(params))
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        trial.set_user_attr("seconds", 0.0)
        return 1.0 - abs(np.log10(params["train.learning_rate"]) + 2.5)

    monkeypatch.setattr(search, "run_trial", lambda *args: fake_trial(*args, interrupt_at=3))
    with pytest.raises(KeyboardInterrupt):
        tuning.search_trials(tuning.Search(config))
    study = _study(config)
    assert not study.user_attrs["closed"] and study.user_attrs["stopped"]
    monkeypatch.setattr(search, "run_trial", fake_trial)
    trials = tuning.search_trials(tuning.Search(config))
    planned = study.user_attrs["planned:random"] + study.user_attrs["planned:grid"]
    assert len(trials) == planned and study.user_attrs["closed"]
    assert len(calls) == planned + 1  # every planned trial once, and the interrupted one a second time
    assert calls.count(calls[2]) == 2 and len(set(calls)) == planned


def test_the_study_outlives_a_change_of_workers_or_storage_but_not_of_the_search(tmp_path):
    from pipelines.core import stage

    def fingerprint(*overrides):
        return stage.fingerprint(tiny_config(tmp_path, *overrides), "tune", tuning.SECTIONS, {"split": "s"})

    assert fingerprint() == fingerprint("search.n_jobs=3", "search.storage=postgresql://u@db/x")
    assert fingerprint() != fingerprint("search.seed=1") and fingerprint() != fingerprint("search.epochs=5")


@pytest.mark.slow
def test_cv_search_where_train_streams_and_val_is_in_memory(tmp_path):
    from pipelines.data import readers, shards, splits

    config = _search_config(tmp_path, folds=2, n_trials=1, objective="cv", epochs=1)
    for stage in (clean, split):
        stage.run(config)
    folder = workspace.stage_dir(tmp_path, config.experiment, "split")
    sizes = {name: np.prod(splits.split_items(folder, name).shape) / (1 << 20) for name in ("train", "val")}
    between = float(sizes["train"] + sizes["val"]) / 2  # train is larger than this, val smaller
    config = config_module.replace_path(config, "runtime.in_memory_mb", between)
    data = splits.load_split(folder, in_memory_mb=between)
    assert isinstance(data.x["train"], shards.Items) and isinstance(data.x["val"], readers.ArrayReader)
    views = splits.fold_views(folder, data)
    assert sum(len(view.x["val"]) for view in views) == len(data.y["train"]) + len(data.y["val"])
    train.run(config)
    trials = tuning.search_trials(tuning.Search(config))
    assert len(trials) == 1 and trials[0]["state"] == "complete" and len(trials[0]["fold_scores"]) == 2
    assert all(0.0 <= score <= 1.0 for score in trials[0]["fold_scores"])


KEY = "val/accuracy"


def test_the_trials_plot_takes_a_choice_of_lists(tmp_path):
    trials = [{"phase": "random", "params": {"model.filters": [8, 16], "train.learning_rate": 1e-3}, KEY: 0.9},
              {"phase": "grid", "params": {"model.filters": [32], "train.learning_rate": 1e-2}, KEY: 0.95}]
    tuning.plot(trials, {KEY: 0.8}, KEY, tmp_path / "trials.png")
    assert (tmp_path / "trials.png").stat().st_size > 1000


def test_the_qmc_sampler_spreads_phase_one_over_every_stratum_and_is_seeded():
    space = {"train.learning_rate": config_module.ParamSpace(kind="uniform", low=0.0, high=1.0),
             "model.l2": config_module.ParamSpace(kind="uniform", low=0.0, high=1.0)}

    def strata(kind: str, seed: int) -> list[int]:
        points = np.array([[trial["train.learning_rate"], trial["model.l2"]]
                           for trial in search.sample(space, 9, seed, kind)])
        # the first point shows the sampler the space (drawn at random); the eight after it are Sobol points
        return [len(set(np.floor(points[1:, axis] * 8).astype(int))) for axis in (0, 1)]

    for seed in (0, 1, 2):
        assert strata("qmc", seed) == [8, 8]  # one point in each eighth of each axis
    assert any(strata("random", seed) != [8, 8] for seed in (0, 1, 2))
    assert search.sample(space, 5, 3, "qmc") == search.sample(space, 5, 3, "qmc")
    assert search.sample(space, 5, 3, "qmc") != search.sample(space, 5, 4, "qmc")
