"""MLflow plumbing: the project's store, one experiment per config, nested runs, the model registry.

The store lives under `<root>/mlruns/` (SQLite database `mlflow.db` and artifact root `artifacts/`);
`MLFLOW_TRACKING_URI` overrides it, for example with a shared tracking server.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils import logging_utils

from pipelines.core import cluster
from pipelines.core import config as config_module
from pipelines.core.errors import StageError

CHAMPION = "champion"
# The experiment's kind, as MLflow 3's UI reads it: without it an experiment opens on its GenAI traces page.
EXPERIMENT_KIND, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"


# The user's tracking server, read once: `mlflow.set_tracking_uri` writes MLFLOW_TRACKING_URI into this
# process's environment itself, so reading it later would pin every config to the first store used.
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI", "")


def tracking_uri(root: Path) -> str:
    return USER_TRACKING_URI or f"sqlite:///{Path(root).resolve() / 'mlruns' / 'mlflow.db'}"


_WORKER_STORE: list[Path] = []


def _store_root(config: config_module.Config) -> Path:
    """The project's root, or for a non-chief worker of a multi-worker cluster a throwaway folder: only the
    chief logs and registers (its runs are the record; the workers' would repeat them)."""
    if cluster.is_chief(config.runtime.strategy):
        return config.root
    if not _WORKER_STORE:
        _WORKER_STORE.append(Path(tempfile.mkdtemp(prefix="mlflow-worker-")))
        atexit.register(shutil.rmtree, _WORKER_STORE[0], True)
    return _WORKER_STORE[0]


def configure(config: config_module.Config) -> str:
    """Points MLflow at the project's store and returns the experiment id (created on first use)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database-migration INFO lines
    # a database error is raised to the CLI, which names it in one line; MLflow also logs it with its traceback
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    root = _store_root(config)
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(root) if root == config.root else f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    if uri.startswith(("http://", "https://")):
        # MLflow retries a refused connection 7 times with doubling waits (about four minutes of silence); two
        # quick retries (about 1 s and 2 s, up to 0.5 s of jitter each) name an unreachable server within seconds.
        # The user's own settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with _schema_lock(uri):
        return _experiment(config, uri, root)


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """Serializes the first use of a local SQLite store between processes (a lock file beside the database):
    MLflow creates and migrates the schema on first use, and two processes doing it at once race
    (`table _alembic_tmp_experiments already exists`)."""
    database = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or "?" in uri or not database.parent.is_dir():
        yield
        return
    import fcntl

    with open(database.parent / ".schema.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _experiment(config: config_module.Config, uri: str, root: Path) -> str:
    experiment = mlflow.get_experiment_by_name(config.experiment)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND) != MODEL_DEVELOPMENT:
            MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
        return experiment.experiment_id
    # Through a tracking server the server places artifacts (`mlflow-artifacts:/`, relative to its artifact
    # destination); a local store keeps them beside its database, as an absolute path MLflow writes down.
    served = uri.startswith(("http://", "https://"))
    artifacts = None if served else (root / "mlruns" / "artifacts" / config.experiment).as_uri()
    try:
        return mlflow.create_experiment(config.experiment, artifact_location=artifacts,
                                        tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT})
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow.get_experiment_by_name(config.experiment).experiment_id  # created meanwhile elsewhere


def _not_found(error: MlflowException) -> bool:
    """Only "does not exist" means absent; a locked database or a server error must not look like it."""
    return error.error_code == "RESOURCE_DOES_NOT_EXIST"


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
    # MLflow keys allow letters, digits and _-. :/ only: a gate floor such as `recall@malignant` is logged as
    # `recall_at_malignant`, any other character as _ (config.yaml keeps every name as written)
    mlflow.log_params({re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_").replace("=", "_is_")): value
                       for key, value in flatten(resolved).items()})
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
def run(config: config_module.Config, name: str, tags: dict | None = None,
        span: tuple[float, float] | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run, nested under the active one if any, that logs the resolved config.

    Args:
        span: (start, end) in seconds since the epoch, for a run logged after the work it records (a search
            trial that ran in a worker process), so that the UI shows the work's real duration.
    """
    experiment_id = configure(config)
    parent = mlflow.active_run()
    if parent is None:
        close_stale_runs(experiment_id)
    run_id = None
    if span is not None:
        created = MlflowClient().create_run(experiment_id, start_time=int(span[0] * 1000), run_name=name,
                                            tags={"mlflow.parentRunId": parent.info.run_id} if parent else {})
        run_id = created.info.run_id
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, experiment_id=experiment_id,
                          nested=parent is not None) as active:
        mlflow.set_tags({"stage": name, "pid": str(os.getpid()), "host": socket.gethostname(), **(tags or {})})
        log_config(config)
        yield active
    if span is not None:
        MlflowClient().set_terminated(active.info.run_id, "FINISHED", end_time=int(span[1] * 1000))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)


def register(config: config_module.Config, model_uri: str, tags: dict[str, str]) -> str:
    """Registers a logged model under the experiment's name with `tags` on the version; returns the version."""
    logging_utils.disable_logging()  # MLflow prints "Successfully registered ..."; the caller says it better
    try:
        version = mlflow.register_model(model_uri, config.experiment, tags=tags)
    finally:
        logging_utils.enable_logging()
    return str(version.version)


def describe_version(config: config_module.Config, version: str, text: str) -> None:
    MlflowClient().update_model_version(config.experiment, version, description=text)


def tag_version(config: config_module.Config, version: str, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(config.experiment, version, key, value)


def set_champion(config: config_module.Config, version: str, alias: str = CHAMPION) -> None:
    MlflowClient().set_registered_model_alias(config.experiment, alias, version)


def champion_version(config: config_module.Config, alias: str = CHAMPION) -> str | None:
    """The version the `champion` alias (or a board's `champion-<board>`) points at; None when there is no
    registered model or no such alias."""
    configure(config)
    try:
        registered = MlflowClient().get_registered_model(config.experiment)
    except MlflowException as error:
        if _not_found(error):
            return None
        raise
    version = registered.aliases.get(alias)
    return None if version is None else str(version)


def version_tags(config: config_module.Config, version: str) -> dict[str, str] | None:
    """The tags of one registered version; None when the version does not exist."""
    configure(config)
    try:
        return dict(MlflowClient().get_model_version(config.experiment, version).tags)
    except MlflowException as error:
        if _not_found(error):
            return None
        raise


def version_exists(config: config_module.Config, version: str) -> bool:
    return version_tags(config, version) is not None


def load_champion(config: config_module.Config, version: str | None = None):
    """Loads the champion (or the given registered `version`, so that a stage uses the version it fingerprinted
    even if the alias moves meanwhile) back as a Keras model.

    Raises:
        StageError: no champion is registered, or MLflow handed back something that is not a Keras model.
    """
    import tf_keras as keras

    version = version or champion_version(config)
    if version is None:
        raise StageError(
            f"no model '{config.experiment}@{CHAMPION}' in the registry at {tracking_uri(config.root)}: "
            "run the train (and tune) stage first"
        )
    uri = f"models:/{config.experiment}/{version}"
    model = mlflow.tensorflow.load_model(uri)
    if not isinstance(model, keras.Model):
        raise StageError(f"{uri} loaded as {type(model).__name__}, not a Keras model: TF_USE_LEGACY_KERAS=1 must "
                         "be set before TensorFlow is imported (import pipelines or models first)")
    return model
