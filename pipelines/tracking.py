"""MLflow plumbing: the project's store, one experiment per config, nested runs, the model registry.

The store lives under `<root>/mlruns/` (SQLite database `mlflow.db` and artifact root `artifacts/`);
`MLFLOW_TRACKING_URI` overrides it, for example with a shared tracking server.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipelines import config as config_module

CHAMPION = "champion"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlruns' / 'mlflow.db'}"


def configure(config: config_module.Config) -> str:
    """Points MLflow at the project's store and returns the experiment id (created on first use)."""
    (config.root / "mlruns").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(config.root))
    mlflow.set_registry_uri(tracking_uri(config.root))
    experiment = mlflow.get_experiment_by_name(config.experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = (config.root / "mlruns" / "artifacts" / config.experiment).as_uri()
    try:
        return mlflow.create_experiment(config.experiment, artifact_location=artifacts)
    except MlflowException:  # created meanwhile by another process
        return mlflow.get_experiment_by_name(config.experiment).experiment_id


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = str(value)
    return flat


def log_config(config: config_module.Config) -> None:
    """Logs the resolved config as params and as `config.yaml`."""
    resolved = config_module.to_dict(config)
    mlflow.log_params(flatten(resolved))
    mlflow.log_text(yaml.safe_dump(resolved, sort_keys=False), "config.yaml")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_stale_runs(experiment_id: str) -> list[str]:
    """Marks KILLED the runs left RUNNING by a process of this host that no longer exists (SIGKILL, power
    loss); returns their ids."""
    client = MlflowClient()
    stale = []
    for found in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = found.data.tags
        if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit() and \
                not _alive(int(tags["pid"])):
            client.set_terminated(found.info.run_id, status="KILLED")
            stale.append(found.info.run_id)
    if stale:
        print(f"[mlflow] marked {len(stale)} run(s) of a killed process as KILLED: {', '.join(stale)}")
    return stale


@contextlib.contextmanager
def run(config: config_module.Config, name: str, tags: dict | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run, nested under the active one if any, that logs the resolved config."""
    experiment_id = configure(config)
    nested = mlflow.active_run() is not None
    if not nested:
        close_stale_runs(experiment_id)
    with mlflow.start_run(run_name=name, experiment_id=experiment_id, nested=nested) as active:
        mlflow.set_tags({"stage": name, "pid": str(os.getpid()), "host": socket.gethostname(), **(tags or {})})
        log_config(config)
        yield active


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)


def register(config: config_module.Config, model_uri: str, make_champion: bool) -> str:
    """Registers a logged model under the experiment's name; returns the new version."""
    version = mlflow.register_model(model_uri, config.experiment)
    if make_champion:
        MlflowClient().set_registered_model_alias(config.experiment, CHAMPION, version.version)
    return str(version.version)


def set_champion(config: config_module.Config, version: str) -> None:
    MlflowClient().set_registered_model_alias(config.experiment, CHAMPION, version)


def champion_version(config: config_module.Config) -> str | None:
    configure(config)
    try:
        return str(MlflowClient().get_model_version_by_alias(config.experiment, CHAMPION).version)
    except MlflowException:
        return None


def version_exists(config: config_module.Config, version: str) -> bool:
    configure(config)
    try:
        MlflowClient().get_model_version(config.experiment, version)
        return True
    except MlflowException:
        return False


def load_champion(config: config_module.Config):
    """Loads `models:/<experiment>@champion` back as a Keras model.

    Raises:
        RuntimeError: no champion is registered, or MLflow handed back something that is not a Keras model.
    """
    import tf_keras as keras

    if champion_version(config) is None:
        raise RuntimeError(
            f"no model '{config.experiment}@{CHAMPION}' in the registry at {tracking_uri(config.root)}: "
            "run the train (and tune) stage first"
        )
    model = mlflow.tensorflow.load_model(f"models:/{config.experiment}@{CHAMPION}")
    if not isinstance(model, keras.Model):
        raise RuntimeError(
            f"models:/{config.experiment}@{CHAMPION} loaded as {type(model).__name__}, not a Keras model: "
            "TF_USE_LEGACY_KERAS=1 must be set before TensorFlow is imported"
        )
    return model
