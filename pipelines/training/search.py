"""Hyperparameter search on Optuna: random sampling first, then a grid around the best region, on validation
data only.

A study per experiment and fingerprint lives in Optuna's RDB storage (a SQLite file in the workspace by default,
`search.storage` for a PostgreSQL URL that several machines share). Each phase is planned in full by the
coordinator (the tune stage) and enqueued in the study: the random phase sampled by Optuna's seeded
`RandomSampler`, the grid phase the refined grid below. Workers (the stage itself, `search.n_jobs - 1` local
processes, `make tune-worker` elsewhere) run `Study.optimize`, whose `ask` takes an enqueued trial by the storage's
compare-and-set of WAITING to RUNNING (atomic on PostgreSQL by its row lock, on SQLite by `open_study`'s
transactions), so each trial is handed out once, no point runs twice and the phases finish exactly their plan.
Pruning is Optuna's `MedianPruner`. Optuna's heartbeats mark the trial of a killed worker failed after a grace
period, and its `RetryHeartbeatStaleTrialCallback` enqueues it again: a kill loses only the running trial. This
module does not touch MLflow; the stage logs one nested run per trial after the search.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
import tf_keras as keras
from optuna.trial import TrialState
from sklearn.model_selection import ParameterGrid

from pipelines.core import config as config_module
from pipelines.data import splits
from pipelines.training import boards as boards_module
from pipelines.training import fitting, recipes

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the stage prints one line per trial itself
HEARTBEAT_SECONDS, GRACE_SECONDS = 2, 20  # a worker silent for 20 s is taken for dead
RETRIES = 2  # a trial whose worker dies runs at most twice more (a trial that kills its worker stops there)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
PRIMITIVE = (str, int, float, bool, type(None))


def plain(value):
    """A NumPy scalar as the Python number a config holds."""
    return value.item() if isinstance(value, np.generic) else value


def _encode(value):
    """A choice as Optuna stores it: primitives as they are, anything else (a list of filters) as JSON."""
    return value if isinstance(value, PRIMITIVE) else json.dumps(value)


def distributions(space: dict[str, config_module.ParamSpace]) -> dict[str, optuna.distributions.BaseDistribution]:
    """search.space -> Optuna's distributions."""
    converted = {}
    for path, param in space.items():
        if param.kind in ("log_uniform", "uniform"):
            converted[path] = optuna.distributions.FloatDistribution(param.low, param.high,
                                                                     log=param.kind == "log_uniform")
        elif param.kind == "int":
            converted[path] = optuna.distributions.IntDistribution(int(param.low), int(param.high))
        else:
            converted[path] = optuna.distributions.CategoricalDistribution([_encode(v) for v in param.values])
    return converted


def decode(space: dict[str, config_module.ParamSpace], params: dict) -> dict:
    """Optuna's stored parameters -> config values."""
    decoded = {}
    for path, value in params.items():
        if space[path].kind == "choice":
            value = next(choice for choice in space[path].values if _encode(choice) == value)
        decoded[path] = plain(value)
    return decoded


def sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """Phase 1's sampler: `random` (Optuna's RandomSampler) or `qmc` (its QMCSampler on a scrambled Sobol
    sequence, which spreads a few points evenly over the space; categorical parameters, which it cannot place,
    and the first point, which shows it the space, come from the seeded RandomSampler)."""
    if kind == "qmc":
        warnings.filterwarnings("ignore", "QMCSampler is experimental", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                          independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                          warn_independent_sampling=False, warn_asynchronous_seeding=False)
    return optuna.samplers.RandomSampler(seed=seed)


def sample(space: dict[str, config_module.ParamSpace], count: int, seed: int, kind: str = "random") -> list[dict]:
    """Phase 1: `count` parameter sets drawn by the `kind` sampler with `seed`, as config values."""
    scratch = optuna.create_study(sampler=sampler(kind, seed))
    plan = []
    for _ in range(count):
        trial = scratch.ask(distributions(space))
        plan.append(decode(space, trial.params))
        scratch.tell(trial, 0.0)
    return plan


def axis(param: config_module.ParamSpace, low: float, high: float, points: int) -> list:
    """`points` values from low to high, log-spaced for log_uniform, whole numbers for int."""
    if points == 1 or low == high:
        return [plain(low) if param.kind != "int" else int(round(low))]
    values = np.geomspace(low, high, points) if param.kind == "log_uniform" else np.linspace(low, high, points)
    if param.kind == "int":
        return sorted({int(round(value)) for value in values})
    return [float(value) for value in values]


def grid_around(space: dict[str, config_module.ParamSpace], top: list[dict], points: int) -> list[dict]:
    """Phase 2: a grid over the region the top trials span.

    Numeric parameters get `points` values across [min, max] of the top trials; a categorical parameter is
    fixed to the top trials' value when they agree, and keeps the values they used when they disagree.
    """
    grid = {}
    for path, param in space.items():
        seen = [trial[path] for trial in top]
        if param.kind == "choice":
            distinct = {json.dumps(value): value for value in seen}  # choices may be lists (model.filters)
            grid[path] = list(distinct.values())
        else:
            grid[path] = axis(param, min(seen), max(seen), points)
    return [{path: plain(value) for path, value in params.items()} for params in ParameterGrid(grid)]


def nearest_first(space: dict[str, config_module.ParamSpace], plan: list[dict], best: dict) -> list[dict]:
    """The grid ordered by distance to the best trial (log scale where the distribution is, each parameter
    divided by its range), so that a budget cut keeps the points nearest the best region."""
    def coordinate(path: str, value) -> float:
        param = space[path]
        if param.kind == "choice":
            return 0.0 if value == best[path] else 1.0
        scale = np.log10 if param.kind == "log_uniform" else (lambda number: number)
        return (scale(value) - scale(best[path])) / max(scale(param.high) - scale(param.low), 1e-12)

    return sorted(plan, key=lambda params: sum(coordinate(path, params[path]) ** 2 for path in params))



def in_turn(plans: list[list[dict]]) -> list[dict]:
    """Several phase-2 plans as one: their first points, then their second ones, and so on (a point already
    planned once is skipped), so that a budget cut takes from each region alike."""
    merged, seen = [], set()
    for position in range(max((len(plan) for plan in plans), default=0)):
        for plan in plans:
            if position < len(plan) and key(plan[position]) not in seen:
                seen.add(key(plan[position]))
                merged.append(plan[position])
    return merged


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def _begin_immediate(connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def open_study(url: str, name: str, higher: bool, prune_warmup: int) -> optuna.Study:
    """The study `name` in the storage at `url`, created on first use (by any process: creation is atomic).

    `Study.ask` takes an enqueued trial by reading it WAITING and setting it RUNNING in one transaction
    (`SELECT ... FOR UPDATE`, then UPDATE): PostgreSQL's row lock makes that atomic. SQLite ignores FOR UPDATE, and
    Python's sqlite3 module begins a transaction only at the UPDATE, so two processes could both read WAITING and
    both take the trial (measured with three processes asking from one queue: 17 of 300 trials handed out twice).
    Here each SQLite transaction begins with BEGIN IMMEDIATE, which takes the write lock before the read
    (SQLAlchemy's recipe for pysqlite's transactions), so the read and the update are one step on SQLite too."""
    sqlite = url.startswith("sqlite")
    # isolation_level None: pysqlite emits no BEGIN of its own; the "begin" event below emits BEGIN IMMEDIATE.
    engine = {"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=RETRIES))
    if sqlite:
        sqlalchemy.event.listen(storage.engine, "begin", _begin_immediate)
    # The median rule from `prune_warmup` epochs on: Optuna counts steps from 0, the config counts epochs.
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(prune_warmup - 1, 0)) \
        if prune_warmup else optuna.pruners.NopPruner()
    return optuna.create_study(storage=storage, study_name=name, load_if_exists=True, pruner=pruner,
                               direction="maximize" if higher else "minimize")


def plan(study: optuna.Study, phase: str, plan_: list[dict], space: dict[str, config_module.ParamSpace]) -> int:
    """Enqueues a phase once (a resumed search finds it planned); returns how many trials it holds."""
    planned = study.user_attrs.get(f"planned:{phase}")
    if planned is not None:
        return planned
    for params in plan_:
        study.enqueue_trial({path: _encode(value) for path, value in params.items()}, user_attrs={"phase": phase},
                            skip_if_exists=False)
    study.set_user_attr(f"planned:{phase}", len(plan_))
    return len(plan_)


class _Report(keras.callbacks.Callback):
    """Reports each epoch's validation objective to the trial; stops training when Optuna's pruner says so."""

    def __init__(self, trial: optuna.Trial, objective: fitting.Objective):
        super().__init__()
        self.trial, self.objective, self.pruned_at, self.step = trial, objective, None, 0

    def on_epoch_end(self, epoch, logs=None):
        # Steps count every epoch this callback saw: fine-tuning's second fit goes on from the first's last step.
        step, self.step = self.step, self.step + 1
        value = (logs or {}).get(self.objective.log_name)
        if self.pruned_at is not None:
            self.model.stop_training = True  # pruned in an earlier fit: the next one stops at once
            return
        if value is None or not np.isfinite(value):
            return
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            self.pruned_at = step + 1
            self.model.stop_training = True


def _suggest(trial: optuna.Trial, path: str, distribution):
    """The trial's value of one parameter: the enqueued one (Optuna returns the fixed parameter)."""
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        return trial.suggest_float(path, distribution.low, distribution.high, log=distribution.log)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(path, distribution.low, distribution.high)
    return trial.suggest_categorical(path, distribution.choices)


def run_trial(trial: optuna.Trial, config: config_module.Config, split_folder: Path, split_digest: str) -> float:
    """The objective: trains the trial's parameters on the training split and returns its validation score (or
    the mean over k folds of train+val); raises TrialPruned when the median rule stops it, returns NaN (a failed
    trial, not retried) when training diverges. Reads only the training side of the split."""
    space = config.search.space
    params = decode(space, {path: _suggest(trial, path, distribution)
                            for path, distribution in distributions(space).items()})
    for path, value in params.items():
        config = config_module.replace_path(config, path, value)
    config = config_module.replace_path(config, "train.epochs", config.search.epochs)
    # train and val only: the test split is never read here
    data = splits.load_split(Path(split_folder), in_memory_mb=config.runtime.in_memory_mb)
    objective = fitting.objective(data.task, config.train)
    trial.set_user_attr("started", time.time())
    started = time.perf_counter()
    try:
        if config.search.objective == "cv":
            scores = [recipes.fit_model(config, fold, split_digest, log_to_mlflow=False)[2][objective.key]
                      for fold in splits.fold_views(Path(split_folder), data, config.runtime.in_memory_mb)]
            trial.set_user_attr("fold_scores", [float(score) for score in scores])
            trial.set_user_attr("spread", float(np.std(scores)))
            trial.set_user_attr("seconds", time.perf_counter() - started)
            return float(np.mean(scores))
        report = _Report(trial, objective)
        model, history, result = recipes.fit_model(config, data, split_digest, log_to_mlflow=False,
                                                   callbacks=[report])
    except fitting.TrainingDiverged as error:  # a legitimate outcome of a bad region: recorded, not retried
        trial.set_user_attr("diverged", str(error))
        trial.set_user_attr("seconds", time.perf_counter() - started)
        return float("nan")
    trial.set_user_attr("curve", [float(value) for value in history.get(objective.log_name, [])])
    trial.set_user_attr("val/loss", float(result["val/loss"]))
    trial.set_user_attr("epochs", int(result["epochs"]))
    trial.set_user_attr("seconds", time.perf_counter() - started)
    if config.search.targets and not report.pruned_at:  # int8 on TFLM and each board's estimate
        for name, value in boards_module.measure_model(model, data, config).items():
            trial.set_user_attr(name, plain(value))
            if name.endswith("_excess"):  # Optuna's constraints: feasible when every one is <= 0
                trial.set_constraint(name, value)
    if report.pruned_at:
        trial.set_user_attr("pruned_at", report.pruned_at)
        trial.set_user_attr("score", float(result[objective.key]))  # the best before it stopped
        raise optuna.TrialPruned(f"below the median at epoch {report.pruned_at}")
    return float(result[objective.key])


def _waiting(study: optuna.Study) -> bool:
    """Whether an enqueued trial waits, and the study's `deadline` (the time budget) lets one start."""
    if time.time() >= study.user_attrs.get("deadline", float("inf")):
        return False
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Enqueues a failed trial again with its parameters and attributes, as the heartbeat callback does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)


def _fail(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial | None:
    """Fails running trial `number` and returns it, or None when it is not running (another process ended it)."""
    try:
        return study.tell(number, state=TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # finished (or failed) meanwhile
        return None


def fail_stale(study: optuna.Study) -> None:
    """A killed worker's trial: failed once its heartbeat is GRACE_SECONDS old and enqueued again (Optuna's
    `fail_stale_trials` and the storage's retry callback). A trial taken by a worker killed before its first
    heartbeat (Optuna's check skips a trial without one) has no `worker` yet: it is failed and enqueued here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # "experimental" since 2.9
        optuna.storages.fail_stale_trials(study)
    horizon = datetime.datetime.now() - datetime.timedelta(seconds=GRACE_SECONDS)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" not in trial.user_attrs and trial.datetime_start and trial.datetime_start < horizon:
            failed = _fail(study, trial.number)
            if failed is not None:
                _retry(study, failed)


def _first_beat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Records the trial's first heartbeat before the trial is marked as this worker's. Optuna's first beat comes
    from a thread that may run only after the objective has begun (under load, seconds later); a worker killed in
    between would leave a RUNNING trial with a `worker` and no heartbeat, which neither `fail_stale_trials` nor
    `fail_stale`'s check for trials without a `worker` ever fails, and the search would wait for it forever."""
    storage = trial.storage
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)  # public storage API
    storage.record_heartbeat(trial_id)


def work(study: optuna.Study, config: config_module.Config, split_folder: Path, split_digest: str,
         done: Callable[[], bool], on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> int:
    """Runs the study's enqueued trials in this process until `done()`; returns how many it ran.

    A batch is `Study.optimize` (ask, heartbeats, tell); after each trial its callback stops it when no trial
    waits, the time budget is spent or `done()`, so that `ask` never makes a trial of its own. Should another
    worker take the last one between that check and the `ask`, the new trial is failed at once, unrun and tagged
    `unplanned`. Between batches: stale trials are failed and enqueued again, and new ones are waited for."""
    ran, current = 0, {"number": None, "lost": False}

    def objective(trial: optuna.Trial) -> float:
        current.update(number=trial.number, lost=False)
        if "phase" not in trial.user_attrs:  # not an enqueued trial: nothing was left to take
            trial.set_user_attr("unplanned", True)
            study.stop()
            return float("nan")
        try:
            _first_beat(study, trial)
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            return run_trial(trial, config, split_folder, split_digest)
        except optuna.exceptions.UpdateFinishedTrialError:  # taken for dead and failed by another process
            current["lost"] = True
            raise

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal ran
        if not trial.user_attrs.get("unplanned"):
            ran += 1
            if on_trial:
                on_trial(trial)
        if not _waiting(study) or done():
            study.stop()

    while not done():
        fail_stale(study)
        if not _waiting(study):
            time.sleep(0.5)
            continue
        try:
            study.optimize(objective, callbacks=[after])
        except BaseException:
            if current["lost"]:  # its retry runs (or ran) elsewhere
                print(f"[tune] trial {current['number']} was taken for dead and retried by another worker")
                continue
            _hand_back(study, current["number"])
            raise
    return ran


def _hand_back(study: optuna.Study, number: int | None) -> None:
    """An interrupted trial (Ctrl-C, an error): failed, and enqueued again at once (what the heartbeat callback
    does for a killed worker after the grace period)."""
    if number is None:
        return
    trial = next(trial for trial in study.get_trials(deepcopy=False) if trial.number == number)
    if trial.state == TrialState.RUNNING:  # interrupted outside the objective, before Optuna told it
        trial = _fail(study, number)
    if trial is not None and trial.state == TrialState.FAIL and not {"diverged", "unplanned"} & set(trial.user_attrs):
        _retry(study, trial)


def outstanding(study: optuna.Study, phase: str) -> tuple[int, int]:
    """(waiting, running) trials of a phase."""
    trials = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
              if trial.user_attrs.get("phase") == phase]
    return (sum(trial.state == TrialState.WAITING for trial in trials),
            sum(trial.state == TrialState.RUNNING for trial in trials))


def records(study: optuna.Study, objective_key: str, space: dict[str, config_module.ParamSpace]) -> list[dict]:
    """The finished trials as plain records (trials.json, MLflow, the plot). A trial that failed because its
    worker died is left out: its retry stands for it."""
    space_trials = []
    for trial in study.get_trials(deepcopy=False, states=FINISHED):
        attrs = trial.user_attrs
        if trial.state == TrialState.FAIL and "diverged" not in attrs:
            continue
        record = {"number": trial.number, "phase": attrs.get("phase", "?"), "params": decode(space, trial.params),
                  "state": trial.state.name.lower(), "seconds": attrs.get("seconds", 0.0),
                  "started": attrs.get("started"), "worker": attrs.get("worker"),
                  "curve": attrs.get("curve", []), "pruned_at": attrs.get("pruned_at")}
        if trial.state == TrialState.COMPLETE:
            record[objective_key] = trial.value
        elif trial.state == TrialState.PRUNED:
            record[objective_key] = attrs.get("score", np.nan)
        else:
            record[objective_key] = float("-inf") if study.direction.name == "MAXIMIZE" else float("inf")
            record["diverged"] = attrs["diverged"]
        record.update({name: attrs[name] for name in ("val/loss", "epochs", "spread", "fold_scores") if name in attrs})
        boards = {name: value for name, value in attrs.items()
                  if name.startswith("board/") or name in ("int8_bytes", "macs", "params", "tflm_error")}
        if boards:
            record["boards"] = boards
        if "failed_trial" in trial.system_attrs:
            record["retry_of"] = trial.system_attrs["failed_trial"]
        space_trials.append(record)
    return space_trials
