"""The tune stage's search, as a library: the study of one tune fingerprint (`Search`), the two phases worked
on it (`search_trials`: random, then a grid around the best region and each board's, each planned once and
enqueued), the local worker processes of `search.n_jobs`, the `make tune-worker` entry (`work`) and the trials'
MLflow runs and plot.
The Optuna side (spaces, storage, the worker on `Study.optimize`) is pipelines/training/search.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import optuna
import tqdm
import yaml

from pipelines.core import config as config_module
from pipelines.core import figures, stage, tracking, workspace
from pipelines.core.errors import StageError
from pipelines.data import splits
from pipelines.training import boards, fitting, recipes, search

# Every search field but where the study lives and how many local workers take its trials: neither changes
# the result, so changing them continues the same study.
SECTIONS = (*recipes.SECTIONS, *(f"search.{field.name}" for field in dataclasses.fields(config_module.SearchConfig)
                                 if field.name not in ("storage", "n_jobs")))


def apply(config: config_module.Config, params: dict) -> config_module.Config:
    for path, value in params.items():
        config = config_module.replace_path(config, path, value)
    return config


def sample(settings: config_module.SearchConfig) -> list[dict]:
    return search.sample(settings.space, settings.n_trials, settings.seed, settings.sampler)


def log_trial(config: config_module.Config, trial: dict, key: str) -> str:
    """One nested MLflow run per trial: params, the validation curve, the result, phase, time, pruning."""
    tags = {"phase": trial["phase"], "pruned": str(bool(trial.get("pruned_at"))).lower(),
            "state": trial["state"], "diverged": str("diverged" in trial).lower(), "worker": str(trial["worker"]),
            "optuna_trial": str(trial["number"])}
    span = (trial["started"], trial["started"] + trial["seconds"]) if trial.get("started") else None
    with tracking.run(apply(config, trial["params"]), f"trial-{trial['number']}", tags=tags, span=span) as active:
        mlflow.log_params({f"trial.{path}": value for path, value in trial["params"].items()})
        curve = trial.get("curve", [])
        for epoch, value in enumerate(curve):
            mlflow.log_metric(key, value, step=epoch)
        final = {key: trial[key], "trial/seconds": trial["seconds"]}
        final.update({name: trial[name] for name in ("val/loss", "spread", "epochs") if name in trial})
        if trial.get("pruned_at"):
            final["trial/pruned_at_epoch"] = trial["pruned_at"]
        # After the curve's last step, so that the runs table (which shows the latest step) shows the result.
        tracking.log_metrics({name: value for name, value in final.items() if math.isfinite(value)},
                             step=len(curve))
        return active.info.run_id


class Search:
    """The study of one tune fingerprint: where it lives, what it is called, and the data it trains on."""

    def __init__(self, config: config_module.Config):
        if config.runtime.strategy == "multi_worker":  # workers take different trials: no collective steps
            raise StageError("tune spreads its trials over machines with `make tune-worker`, each trial on one "
                             "machine: run it with runtime.strategy 'default' (multi_worker is for train)")
        self.config = config
        self.split_folder, _ = stage.upstream(config, "split", "tune")
        # train's result is only the baseline the search is plotted against: neither the study nor the stage's
        # identity depends on it, so a rerun of train (forced, or an identical one) never restarts a search.
        self.train_folder, self.train_manifest = stage.upstream(config, "train", "tune")
        self.split_id = splits.identity(self.split_folder)
        self.inputs = {"split": stage.identity(self.split_folder)}
        if config.model.architecture == "transfer":
            self.inputs["pretrain"] = stage.identity(stage.upstream(config, "pretrain", "tune")[0])
        # The study is what the trials' results depend on: the split's content (its items and the normalizer
        # fitted on them) and the search config; the stage's fingerprint is exactly that.
        self.fingerprint = stage.fingerprint(config, "tune", SECTIONS, self.inputs)
        self.name = f"{config.experiment}-tune-{self.fingerprint[:12]}"
        folder = workspace.stage_dir(config.root, config.experiment, "tune").parent
        self.url = config.search.storage or f"sqlite:///{folder / 'optuna.db'}"
        self.objective = fitting.objective(workspace.read_json(self.split_folder / "dataset.json")["task"],
                                           self.config.train)

    def study(self) -> optuna.Study:
        return search.open_study(self.url, self.name, self.objective.higher, self.config.search.prune_warmup)

    def work(self, study: optuna.Study, done) -> int:
        def said(trial):
            state = trial.state.name.lower()
            value = f"{trial.value:.4f}" if trial.value is not None else trial.user_attrs.get("diverged", "")
            pruned = f" at epoch {trial.user_attrs['pruned_at']} (median rule)" if "pruned_at" in trial.user_attrs \
                else ""
            print(f"[tune] trial {trial.number} ({trial.user_attrs.get('phase')}) {state}{pruned} {value}")

        return search.work(study, self.config, self.split_folder, self.split_id, done, said)


def local_workers(config: config_module.Config, count: int, folder: Path) -> list[subprocess.Popen]:
    """`count` worker processes on this machine, on the resolved config."""
    if count <= 0:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    resolved = folder / "worker_config.yaml"
    resolved.write_text(yaml.safe_dump(config_module.to_dict(config), sort_keys=False))
    environment = {**worker_threads(count + 1), **os.environ}  # a user's own setting wins
    workers = []
    for index in range(count):
        with open(folder / f"worker-{index}.log", "w") as log:  # the child keeps its own descriptor
            workers.append(subprocess.Popen([sys.executable, "-m", "pipelines", "tune-worker", "--config",
                                             str(resolved)], stdout=log, stderr=subprocess.STDOUT,
                                            env=environment))
    return workers


def worker_threads(processes: int) -> dict[str, str]:
    """TensorFlow's thread pools for one of `processes` training processes sharing this machine's cores: an
    equal share each. Each process would otherwise size its pools to every core, and on 2 cores two searches
    side by side then finish 1.33x the trials of one, against 1.6-1.9x with one thread each (measured in the
    scale docs)."""
    share = max(1, len(os.sched_getaffinity(0)) // processes)
    return {"TF_NUM_INTRAOP_THREADS": str(share), "TF_NUM_INTEROP_THREADS": str(share)}


class _AboveTheBar:
    """stdout while a bar shows on stderr: each whole line is written above the bar (cleared, then redrawn), so
    a trial's result or Keras' epoch lines never land on the bar's line."""

    def __init__(self, bar: tqdm.tqdm, stream):
        self.bar, self.stream, self.pending = bar, stream, ""

    def write(self, text: str) -> int:
        self.pending += text
        if "\n" in self.pending:
            lines, self.pending = self.pending.rsplit("\n", 1)
            self.bar.clear()
            self.stream.write(lines + "\n")
            self.stream.flush()
            self.bar.refresh()
        return len(text)

    def flush(self) -> None:  # a part line (a Keras progress bar's) waits for its end
        self.stream.flush()

    def finish(self) -> None:
        if self.pending:
            self.write("\n")

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _best(study: optuna.Study, higher: bool) -> float | None:
    values = [trial.value for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if trial.value is not None and math.isfinite(trial.value)]
    return (max if higher else min)(values) if values else None


@contextlib.contextmanager
def progress(job: Search, study: optuna.Study, phase: str, planned: int, finished: int
             ) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr for the phase: trials finished (by every worker) of those planned, the best score
    so far, the time left (tqdm's estimate, and the search.max_seconds budget when one is set). Yields
    `update(finished)`. Only the tune stage shows it; `make tune-worker` prints its trials' lines as before."""
    if not planned:
        yield lambda finished: None
        return
    bar = tqdm.tqdm(total=planned, initial=finished, desc=f"[tune] {phase}", unit="trial", file=sys.stderr,
                    dynamic_ncols=True)
    shown: list = [None]

    def update(finished: int) -> None:
        best = _best(study, job.objective.higher)
        left = study.user_attrs["deadline"] - time.time()
        postfix = (f"best {job.objective.key} {best:.4f}" if best is not None else "no result yet") + \
            (f", budget {max(left, 0):.0f}s left" if math.isfinite(left) else "")
        if (finished, postfix) != shown[0]:
            shown[0] = (finished, postfix)
            bar.n = finished
            bar.set_postfix_str(postfix, refresh=False)
            bar.refresh()

    try:
        with contextlib.redirect_stdout(_AboveTheBar(bar, sys.stdout)) as above:
            try:
                yield update
            finally:
                above.finish()
    finally:
        bar.close()


def run_phase(job: Search, study: optuna.Study, phase: str, plan: list[dict]) -> None:
    """Plans the phase once and works until none of its trials waits or runs (or the time budget is spent),
    with a progress bar on stderr."""
    planned = search.plan(study, phase, plan, job.config.search.space)
    waiting, running = search.outstanding(study, phase)
    if planned and waiting + running < planned:
        print(f"[tune] {phase}: {planned - waiting - running} of {planned} trial(s) finished earlier, not redone")

    with progress(job, study, phase, planned, planned - waiting - running) as update:
        def done() -> bool:
            waiting, running = search.outstanding(study, phase)
            update(planned - waiting - running)
            expired = time.time() >= study.user_attrs["deadline"]
            return running == 0 and (waiting == 0 or expired)

        job.work(study, done)
    waiting, _ = search.outstanding(study, phase)
    if waiting:
        print(f"[tune] budget reached (search.max_seconds): {waiting} planned {phase} trial(s) not run")


def grid_regions(trials: list[dict], config: config_module.Config, key: str, higher: bool) -> list[list[dict]]:
    """The groups of random trials phase 2 refines around: the `search.top_k` best, and with `search.targets`
    each board's `top_k` best among those feasible there (fit and deadline), so that a board's champion is
    refined too when the unconstrained best region is too slow or too large for it. A lone feasible trial spans
    no region (a grid around one point is that point): the board's fastest infeasible trials join it, so the
    grid spans the way from the deadline's edge to it. A board with no feasible trial adds no group."""
    done = sorted([trial for trial in trials if trial["phase"] == "random" and trial["state"] == "complete"],
                  key=lambda trial: trial[key], reverse=higher)
    top_k = config.search.top_k
    regions = [done[:top_k]]
    for target in boards.targets(config):
        region = [trial for trial in done if boards.feasible(trial, target.name)][:top_k]
        if region and len(region) < top_k:
            timed = f"board/{target.name}/latency_ms"
            late = [trial for trial in done if not boards.feasible(trial, target.name)
                    and trial.get("boards", {}).get(timed) is not None]
            region += sorted(late, key=lambda trial: trial["boards"][timed])[: top_k - len(region)]
        regions.append(region)
    return [region for region in regions if region]


def search_trials(job: Search, fresh: bool = False) -> list[dict]:
    """Both phases on the study; returns every finished trial (now or in an interrupted run)."""
    settings, key, higher = job.config.search, job.objective.key, job.objective.higher
    study = job.study()
    if study.user_attrs.get("closed"):  # finished earlier; an interrupted (or killed) one is resumed below
        if not fresh:  # e.g. the final training was interrupted, or the champion moved: the trials stand
            trials = search.records(study, key, settings.space)
            print(f"[tune] search {job.name} finished earlier: its {len(trials)} trial(s) stand "
                  "(--force searches afresh)")
            return trials
        optuna.delete_study(study_name=job.name, storage=job.url)
        study = job.study()
    study.set_user_attr("closed", False)
    study.set_user_attr("stopped", False)
    study.set_user_attr("deadline", time.time() + settings.max_seconds if settings.max_seconds else math.inf)
    budget = settings.max_trials or math.inf
    random_plan = sample(settings)[: int(min(settings.n_trials, budget))]
    workers = local_workers(job.config, settings.n_jobs - 1, stage.backup_dir(job.config, "tune", job.fingerprint))
    try:
        run_phase(job, study, "random", random_plan)
        trials = search.records(study, key, settings.space)
        regions = grid_regions(trials, job.config, key, higher)
        room = budget - len(random_plan)
        if settings.grid_points and regions and room > 0:
            tried = {search.key(trial["params"]) for trial in trials}
            plans = []
            for region in regions:
                plan = search.grid_around(settings.space, [trial["params"] for trial in region], settings.grid_points)
                plans.append(search.nearest_first(settings.space, [params for params in plan
                                                                   if search.key(params) not in tried],
                                                  region[0]["params"]))
            plan = search.in_turn(plans)
            if len(plan) > room:
                print(f"[tune] budget reached ({settings.max_trials} trials): {len(plan) - int(room)} planned grid "
                      "trial(s) not run")
            run_phase(job, study, "grid", plan[: int(min(len(plan), room))])
        study.set_user_attr("closed", True)  # finished: the workers exit; a forced rerun starts afresh
    finally:
        # Interrupted (Ctrl-C, an error): the workers stop too, and the study stays open for a rerun to resume.
        study.set_user_attr("stopped", True)
        deadline = time.monotonic() + 60  # a worker ends with its current trial; then it is stopped
        for worker in workers:
            try:
                worker.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    return search.records(study, key, settings.space)


def work(config: config_module.Config, idle_seconds: float = 600.0) -> int:
    """`make tune-worker`: joins the search of this config's tune stage, which must be running or resumable,
    and takes its trials until the search closes (or nothing happens for `idle_seconds`)."""
    job = Search(config)
    try:
        optuna.load_study(study_name=job.name, storage=job.url)
    except KeyError:
        raise StageError(f"no search {job.name} in {job.url}: start `make tune` first (same config)") from None
    study = job.study()
    last = [time.monotonic()]
    pools = [os.environ.get(f"TF_NUM_{kind}_THREADS", "one thread per core") for kind in ("INTRAOP", "INTEROP")]
    print(f"[tune-worker] TensorFlow thread pools: intra-op {pools[0]}, inter-op {pools[1]}")

    def done() -> bool:
        if study.user_attrs.get("closed") or study.user_attrs.get("stopped"):
            return True
        if search.outstanding(study, "random") != (0, 0) or search.outstanding(study, "grid") != (0, 0):
            last[0] = time.monotonic()
        return time.monotonic() - last[0] > idle_seconds

    ran = job.work(study, done)
    print(f"[tune-worker] ran {ran} trial(s) of {job.name}")
    return ran


def _axis_value(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def plot(trials: list[dict], baseline: dict, key: str, path: Path) -> None:
    names = sorted(trials[0]["params"]) if trials else []
    figure, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        for phase, marker in (("random", "o"), ("grid", "x")):
            chosen = [trial for trial in trials if trial["phase"] == phase]
            if not chosen:  # no legend entry for a phase that did not run
                continue
            # A choice of lists (model.filters) is a category on the axis, named by its value.
            axis.scatter([_axis_value(trial["params"][name]) for trial in chosen], [trial[key] for trial in chosen],
                         marker=marker, label=f"{phase} trials")
        axis.axhline(baseline[key], color="grey", linestyle="--", label="train stage")
        values = [trial["params"][name] for trial in trials]
        if all(isinstance(value, float) and value > 0 for value in values) and max(values) / min(values) > 20:
            axis.set_xscale("log")
        axis.set(xlabel=name, ylabel=key)
        axis.legend(fontsize=7)
    figures.save(figure, path)
