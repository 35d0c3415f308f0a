"""The MLflow tracking server over the project's store: what `make ui` and `make server` start.

It serves the artifacts itself (`--serve-artifacts`): runs logged through it get `mlflow-artifacts:/` locations,
resolved against `<root>/mlruns/artifacts` when the server starts, so a moved checkout (or another machine
logging here over HTTP) keeps every artifact view working. Sized for a small machine: one worker, no job queue.

Bound beyond loopback it runs MLflow's basic-auth app, and refuses to start without it: the admin's name and
password come from the environment (`MLFLOW_AUTH_ADMIN_USERNAME`, default `admin`, and
`MLFLOW_AUTH_ADMIN_PASSWORD`), never from a file of the repository; users and permissions live in
`<root>/mlruns/basic_auth.db`. Clients send `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.core.errors import ConfigError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _secret_key(root: Path) -> str:
    """The key Flask signs CSRF tokens with: made once per store, readable by its owner only, kept beside the
    store (outside the repository); `MLFLOW_FLASK_SERVER_SECRET_KEY` overrides it, e.g. for several servers."""
    import secrets

    path = Path(root).resolve() / "mlruns" / ".flask_secret_key"
    if not path.is_file():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            stream.write(secrets.token_hex(32))
    return path.read_text().strip()


def _auth_config(root: Path) -> Path:
    """MLflow's basic-auth settings for this store (no password in it: that comes from the environment). A user
    the admin creates may log runs and register models (EDIT); a request without credentials is refused."""
    path = Path(root).resolve() / "mlruns" / "basic_auth.ini"
    path.write_text("[mlflow]\ndefault_permission = EDIT\n"
                    f"database_uri = sqlite:///{path.parent / 'basic_auth.db'}\nadmin_username = admin\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


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
    authenticated = host not in LOOPBACK or bool(os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"))
    if authenticated and not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        raise ConfigError(f"server: binding {host} opens the store to the network, which needs MLflow's basic-auth: "
                          "set MLFLOW_AUTH_ADMIN_PASSWORD (and MLFLOW_AUTH_ADMIN_USERNAME, default admin), or bind "
                          "127.0.0.1")
    artifacts = Path(root).resolve() / "mlruns" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri(root, backend),
            "--serve-artifacts", "--artifacts-destination", str(artifacts),
            "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    # MLflow 3 starts a job-execution queue (Huey workers) unless told not to: a dozen processes on two cores.
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if authenticated:
        argv += ["--app-name", "basic-auth"]
        environment["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_config(root))
        environment.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", _secret_key(root))
    return argv, environment


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
