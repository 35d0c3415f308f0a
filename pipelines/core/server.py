"""The MLflow tracking server over the project's store: what `make ui` and `make server` start.

It serves the artifacts itself (`--serve-artifacts`): runs logged through it get `mlflow-artifacts:/` locations,
resolved against `<root>/mlruns/artifacts` when the server starts, so a moved checkout (or another machine
logging here over HTTP) keeps every artifact view working. Sized for a small machine: one worker, no job queue.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.core.errors import ConfigError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000


def backend_uri(root: Path, backend: str = "") -> str:
    """The store the server reads: `backend` (a database URI, for example PostgreSQL) or the project's SQLite."""
    return backend or f"sqlite:///{Path(root).resolve() / 'mlruns' / 'mlflow.db'}"


def command(root: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, backend: str = "",
            workers: int = 1, allowed_hosts: str = "") -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and its environment.

    Args:
        allowed_hosts: MLflow's `--allowed-hosts` (comma-separated Host headers, e.g. `tracker.lan:5000`); its
            security middleware admits only localhost without it.
    """
    if not 0 < port < 65536:
        raise ConfigError(f"server port {port} is not a TCP port (1..65535)")
    if workers < 1:
        raise ConfigError(f"server workers must be at least 1, got {workers}")
    artifacts = Path(root).resolve() / "mlruns" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri(root, backend),
            "--serve-artifacts", "--artifacts-destination", str(artifacts),
            "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    # MLflow 3 starts a job-execution queue (Huey workers) unless told not to: a dozen processes on two cores.
    return argv, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def links(root: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, backend: str = "") -> list[str]:
    """One line per experiment: its runs table in the UI.

    MLflow 3.17's UI chooses between its GenAI pages and its runs pages from the browser's saved "workflow
    type", not from the experiment's `mlflow.experimentKind` tag; the `workflowType` URL parameter is the one
    switch it honours on a first visit.
    """
    from mlflow.tracking import MlflowClient

    from pipelines.core.ledger import LEDGER

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    client = MlflowClient(tracking_uri=backend_uri(root, backend))
    experiments = sorted((experiment for experiment in client.search_experiments() if experiment.name != "Default"),
                         key=lambda experiment: (experiment.name == LEDGER, experiment.name))  # the ledger last
    return [f"{experiment.name}: http://{shown}:{port}/#/experiments/{experiment.experiment_id}/runs"
            "?workflowType=machine_learning" for experiment in experiments]


def serve(root: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, backend: str = "",
          workers: int = 1, allowed_hosts: str = "") -> None:
    """Prints the experiments' links, then replaces this process with the server (Ctrl-C stops it)."""
    argv, environment = command(root, host, port, backend, workers, allowed_hosts)
    lines = links(root, host, port, backend)
    print("MLflow UI, runs of each experiment:" if lines else "MLflow UI (no experiment yet):", flush=True)
    for line in lines:
        print(f"  {line}", flush=True)
    print(f"log here from another shell or machine: MLFLOW_TRACKING_URI=http://{host}:{port} make pipeline",
          flush=True)
    os.execve(argv[0], argv, environment)
