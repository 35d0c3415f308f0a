"""The tracking server behind `make ui` and `make server`: stages log and register through it over HTTP, and its
artifacts survive moving the project folder."""

import os
import shutil
import subprocess

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipelines.core import server
from pipelines.core.errors import ConfigError
from tests.conftest import REPO, TINY, free_port, stage_command, stop, wait_for_port


def _serve(root, port):
    argv, environment = server.command(root, port=port)
    process = subprocess.Popen(argv, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_for_port(port, process)
    return process


def test_the_server_command_is_sized_for_a_small_machine(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    argv, environment = server.command(tmp_path, port=5123)
    assert "--app-name" not in argv  # on loopback, without a password set: no authentication
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "made-up-for-this-test")
    assert argv[argv.index("--workers") + 1] == "1" and "--serve-artifacts" in argv
    assert argv[argv.index("--artifacts-destination") + 1] == str(tmp_path.resolve() / "mlruns" / "artifacts")
    assert environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and "--allowed-hosts" not in argv
    argv, _ = server.command(tmp_path, host="0.0.0.0", backend="postgresql://u@db/x", allowed_hosts="t.lan:5000")
    assert argv[argv.index("--backend-store-uri") + 1] == "postgresql://u@db/x"
    assert argv[argv.index("--allowed-hosts") + 1] == "t.lan:5000" and argv[argv.index("--host") + 1] == "0.0.0.0"
    with pytest.raises(ConfigError, match="port 70000"):
        server.command(tmp_path, port=70000)


@pytest.mark.slow
def test_a_pipeline_logged_through_the_server_keeps_its_artifacts_when_the_project_moves(tmp_path):
    root, port = tmp_path / "project", free_port()
    process = _serve(root, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        settings = [*TINY, f"runtime.root={root}"]
        done = subprocess.run(stage_command("all", settings), cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "MLFLOW_TRACKING_URI": uri}, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        champion = client.get_model_version_by_alias("digits", "champion")
        runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
        assert {run.data.tags.get("stage") for run in runs} >= {"analyze", "train", "export", "evaluate"}
        assert all(run.info.artifact_uri.startswith("mlflow-artifacts:/") for run in runs)
        analyze = next(run for run in runs if run.data.tags.get("stage") == "analyze").info.run_id
    finally:
        stop(process)

    moved = tmp_path / "elsewhere"
    shutil.move(root, moved)
    port = free_port()
    process = _serve(moved, port)
    try:
        uri = f"http://127.0.0.1:{port}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        config_text = client.download_artifacts(analyze, "config.yaml", str(tmp_path))
        assert f"root: {root}" in open(config_text).read()  # the run's own record, read back after the move
        source = client.get_model_version_download_uri("digits", champion.version)
        assert source.startswith("mlflow-artifacts:/"), source  # relative to the server, not to a folder
        model = mlflow.artifacts.download_artifacts(artifact_uri=source,
                                                    dst_path=str(tmp_path / "model"), tracking_uri=uri)
        assert any(name.endswith(".keras") or name == "MLmodel" for _, _, files in os.walk(model) for name in files)
    finally:
        stop(process)


def test_a_server_beyond_loopback_refuses_to_start_without_authentication(tmp_path, capsys, monkeypatch):
    from pipelines import __main__ as cli

    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    assert cli.main(["server", "--host", "0.0.0.0", "--set", f"runtime.root={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: server: binding 0.0.0.0 opens the store to the network, which needs MLflow's basic-auth: set "
        "MLFLOW_AUTH_ADMIN_PASSWORD (and MLFLOW_AUTH_ADMIN_USERNAME, default admin), or bind 127.0.0.1"]
    assert not (tmp_path / "mlruns" / "basic_auth.ini").exists()


@pytest.mark.slow
def test_an_authenticated_server_refuses_requests_without_credentials(tmp_path, monkeypatch):
    import base64
    import json
    import urllib.error
    import urllib.request

    secret = base64.b32encode(os.urandom(10)).decode()  # made here, never stored in the repository
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", secret)
    port = free_port()
    argv, environment = server.command(tmp_path, host="0.0.0.0", port=port)
    assert argv[argv.index("--app-name") + 1] == "basic-auth" and secret not in (tmp_path / "mlruns" /
                                                                                 "basic_auth.ini").read_text()
    process = subprocess.Popen(argv, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5"

        def status(method, address, body=None, password=None):
            request = urllib.request.Request(address, method=method, data=body,
                                             headers={"Content-Type": "application/json"})
            if password:
                token = base64.b64encode(f"admin:{password}".encode()).decode()
                request.add_header("Authorization", f"Basic {token}")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        create = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/create"
        body = json.dumps({"name": "intruder"}).encode()
        assert status("GET", url) == 401 and status("POST", create, body) == 401
        assert status("GET", url, password="wrong") == 401
        assert status("GET", url, password=secret) == 200 and status("POST", create, body, secret) == 200
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)
        assert client.get_experiment_by_name("intruder") is not None  # the one created with credentials
    finally:
        stop(process)
