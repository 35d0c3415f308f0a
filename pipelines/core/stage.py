"""The stage contract's shared plumbing: skip when unchanged, stage atomically, track in MLflow."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow

from pipelines.core import cluster, tracking, workspace
from pipelines.core import config as config_module
from pipelines.core.errors import StageError


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a stage's `run(config)` returns: where it wrote, what it measured, whether it was skipped."""

    stage: str
    folder: Path
    metrics: dict
    run_id: str | None
    skipped: bool = False
    paths: tuple[str, ...] = ()
    seconds: float = 0.0  # wall time of this call, the freshness check included


def upstream(config: config_module.Config, stage: str, needed_by: str) -> tuple[Path, dict]:
    """The folder and manifest of a finished upstream stage.

    Raises:
        StageError: the upstream stage has not produced complete outputs yet.
    """
    folder = workspace.stage_dir(config.root, config.experiment, stage)
    manifest = workspace.read_manifest(folder)
    if manifest is None:
        raise StageError(f"{needed_by}: no outputs of stage '{stage}' in {folder}; run '{stage}' first")
    return folder, manifest


def identity(folder: Path) -> str:
    """A finished stage's content identity: the hash of its output files' hashes. Never its manifest, which
    holds a run id and a fingerprint, so an identical rerun upstream (`clean --force` writing the same bytes)
    leaves every downstream stage's inputs, and so its fingerprint, unchanged.

    Raises:
        StageError: the folder holds no complete outputs.
    """
    manifest = workspace.read_manifest(folder)
    if manifest is None:
        raise StageError(f"{folder}: no manifest; run the stage that writes it first")
    return workspace.fingerprint(manifest["outputs"])


Body = Callable[[Path], dict]


def resolved_sections(config: config_module.Config, sections: tuple[str, ...]) -> dict:
    """The config fields a stage declares it reads, resolved. `runtime` (speed, memory, where things live) is
    never part of a stage's identity, except `runtime.strategy`, which changes the arithmetic of training."""
    leaked = [path for path in sections if path.split(".")[0] == "runtime" and path != "runtime.strategy"]
    if leaked:
        raise ValueError(f"runtime fields change speed or memory, never a result: {leaked} in a fingerprint")
    return {path: config_module.to_dict(config_module.get_path(config, path)) for path in sections}


def fingerprint(config: config_module.Config, stage: str, sections: tuple[str, ...], inputs: dict) -> str:
    """What a stage's outputs depend on: its config sections and its inputs' hashes."""
    return workspace.fingerprint({"stage": stage, "config": resolved_sections(config, sections), "inputs": inputs})


def backup_dir(config: config_module.Config, stage: str, stage_fingerprint: str) -> Path:
    """A folder that survives a killed run (outside the stage's staging folder), one per fingerprint."""
    return workspace.stage_dir(config.root, config.experiment, stage).parent / ".backup" / \
        f"{stage}-{stage_fingerprint[:16]}"


def execute(config: config_module.Config, stage: str, sections: tuple[str, ...], inputs: dict[str, str],
            body: Body, force: bool = False, still_valid: Callable[[dict], bool] | None = None,
            guard: Callable[[], None] | None = None) -> StageResult:
    """Runs `body(staging_folder) -> metrics` inside an MLflow run, unless nothing changed.

    Args:
        sections: dotted config paths the stage depends on; they and `inputs` make its fingerprint.
        inputs: name -> hash of each input (usually upstream manifests).
        body: writes the stage's files into the folder it is given and returns its metrics.
        force: rerun even when the fingerprint matches.
        still_valid: extra freshness check on the old manifest (e.g. its registered model still exists).
        guard: called when the stage is about to run, before any MLflow run opens; raises to refuse.
    """
    started = time.perf_counter()
    folder = workspace.stage_dir(config.root, config.experiment, stage)
    resolved = resolved_sections(config, sections)
    stage_fingerprint = fingerprint(config, stage, sections, inputs)
    chief = cluster.is_chief(config.runtime.strategy)
    if chief and workspace.clear_debris(folder):  # a killed run: its staging went, its MLflow run is closed
        print(f"[{stage}] removed the unfinished outputs of a killed run")
        tracking.close_stale_runs(tracking.configure(config))
    if not force and workspace.is_fresh(folder, stage_fingerprint):
        manifest = workspace.read_manifest(folder)
        # A multi-worker cluster's other workers follow the chief's folder alone: their MLflow store is a
        # throwaway one, and a different decision would leave the chief or them waiting in a collective step.
        if still_valid is None or not chief or still_valid(manifest):
            print(f"[{stage}] skipped: inputs and config unchanged since run {manifest['run_id']} "
                  f"(outputs in {folder}; --force reruns it)")
            return StageResult(stage, folder, manifest["metrics"], manifest["run_id"], skipped=True,
                               paths=tuple(manifest["outputs"]), seconds=time.perf_counter() - started)
    if guard is not None:
        guard()
    print(f"[{stage}] running")
    # a multi-worker cluster's other workers write nowhere
    staging = workspace.staging(folder) if chief else tempfile.TemporaryDirectory(prefix=f"{stage}-worker-")
    with tracking.run(config, stage) as active, staging as staged:
        staged = Path(staged)
        metrics = body(staged)
        manifest = workspace.write_manifest(staged, stage_fingerprint, inputs, resolved, active.info.run_id,
                                            metrics)
        mlflow.log_artifact(str(staged / workspace.MANIFEST))
    print(f"[{stage}] done: {_summary(metrics)} -> {folder}")
    return StageResult(stage, folder, metrics, active.info.run_id, paths=tuple(manifest["outputs"]),
                       seconds=time.perf_counter() - started)


def _summary(metrics: dict) -> str:
    shown = [f"{key}={value:.4g}" for key, value in metrics.items()
             if isinstance(value, (int, float)) and not isinstance(value, bool)][:6]
    return ", ".join(shown) or "no metrics"
