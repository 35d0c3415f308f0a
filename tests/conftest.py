"""Shared fixtures: a tiny config in tmp_path (one epoch-ish, 8x8 images), run on the CPU."""

import os
import re

os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests write their own store under tmp_path

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pipelines.core import config as config_module  # noqa: E402

TINY = [
    "data.image_size=8",
    "model.filters=[8]",
    "model.dense_units=16",
    "train.epochs=3",
    "train.patience=2",
    "search.n_trials=1",
    "search.epochs=2",
    "export.representative_samples=32",
    "export.latency_runs=3",
    "runtime.verbose=0",
    # a few epochs of a tiny model lose to logistic regression: the tests exercise everything else, and the gates
    # themselves are tested in tests/test_gates.py
    "export.gate_baseline_margin=-1.0",
]


def tiny_config(root, *overrides):
    """The default config shrunk for a test: tiny model, few epochs, everything written under `root`."""
    return config_module.load(None, [*TINY, f"runtime.root={root}", *overrides])


def sine_recordings(folder, count: int = 12, length: int = 120, rate: float = 20.0, given: dict | None = None):
    """`count` CSV recordings of two channels (a sine whose frequency is the class, `activity` slow or fast) with
    a time column `t`, and a `split` column when `given` names each recording's split."""
    import numpy as np
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        label = ("slow", "fast")[index % 2]
        time = np.arange(length) / rate
        frequency = 1.0 if label == "slow" else 3.0
        frame = pd.DataFrame({"t": time, "ax": np.sin(2 * np.pi * frequency * time) + rng.normal(0, 0.1, length),
                              "ay": np.cos(2 * np.pi * frequency * time), "activity": label})
        if given is not None:
            frame["split"] = given[index]
        frame.to_csv(folder / f"rec{index:02d}.csv", index=False)


def stage_command(stage: str, settings: list[str]) -> list[str]:
    """`python -m pipelines <stage> --set ...` for a subprocess."""
    return [sys.executable, "-m", "pipelines", stage, *[item for setting in settings for item in ("--set", setting)]]


def default_sigint() -> None:
    """`preexec_fn` for a child that a test interrupts: SIGINT back to its default, as in a terminal. A test run
    started in the background (`cmd &` in a script) inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigkill_after_first_checkpoint(command: list[str], backup_root: Path, timeout: float = 180) -> None:
    """Starts `command`, waits until a `checkpoint` file appears under `backup_root`, then SIGKILLs it.

    Raises:
        AssertionError: no checkpoint was written within `timeout` seconds.
    """
    def written() -> bool:
        try:
            return bool(list(backup_root.rglob("checkpoint")))
        except FileNotFoundError:  # the child renamed a temporary checkpoint folder while the scan walked it
            return False

    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not written():
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert list(backup_root.rglob("checkpoint")), "no checkpoint was written before the kill"


def png(path: Path, size: tuple[int, int]) -> None:
    """A written plot: a PNG of the expected size in pixels that is not blank."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size, (path, image.size)
        assert np.asarray(image.convert("L"), float).std() > 5, f"{path} is blank"


def split_arrays(folder: Path, name: str, *names: str) -> tuple:
    """A split's arrays as tests read them: "x" is the split's images, read whole from the shards."""

    from pipelines.core import workspace
    from pipelines.data import splits

    return tuple(splits.split_items(folder, name).array() if item == "x" else
                 workspace.load_arrays(folder, name, item)[0] for item in names)


def tamper_shard(split_folder: Path, name: str, position: int, resign: bool = False,
                 record_crc: bool = True) -> None:
    """Inverts the pixels of item `position` of a split inside its shard file, as an edit on disk would;
    `resign` also updates the shard's checksum in the index and, with `record_crc`, the record's own CRC (a
    deliberate edit that only the split manifest's item hashes can catch)."""
    import json

    import numpy as np

    from pipelines.data import splits

    items = splits.split_items(split_folder, name, verify=False)
    shards = items.shards
    number, record = divmod(int(items.keys[position]), shards.per_shard)
    path = Path(shards.path(number))
    data = bytearray(path.read_bytes())
    start = record * shards.record_bytes + 12 + 8
    data[start:start + shards.pixels] = (255 - np.frombuffer(bytes(data[start:start + shards.pixels]), np.uint8)
                                         ).tobytes()
    if resign and record_crc:  # every record's CRC made to match its (edited) bytes
        from pipelines.data.shards import masked_crc32c

        records = np.frombuffer(bytes(data), np.uint8).reshape(-1, shards.record_bytes).copy()
        payload = records[:, 12:12 + 8 + shards.pixels]
        records[:, 12 + 8 + shards.pixels:] = masked_crc32c(payload).astype("<u4").view(np.uint8).reshape(-1, 4)
        data = bytearray(records.tobytes())
    path.write_bytes(bytes(data))
    if resign:
        import hashlib

        index_path = path.parent / "shards.json"
        index = json.loads(index_path.read_text())
        index["files"][number]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
        index_path.write_text(json.dumps(index))


@pytest.fixture
def tiny(tmp_path):
    return tiny_config(tmp_path)


REPO = Path(__file__).resolve().parent.parent
# Tests that need a program from Debian (chromium, postgresql) skip where it is missing, except under CI
# (`.ci/run` installs them and sets REQUIRE_SYSTEM_TOOLS=1), where a missing program is a failure.
REQUIRE_SYSTEM_TOOLS = os.environ.get("REQUIRE_SYSTEM_TOOLS", "") not in ("", "0")


@pytest.fixture(autouse=True)
def no_stray_mlflow_store():
    """MLflow used before `tracking.configure` falls back to `./mlflow.db`, wherever the process runs (a stray
    one was once committed): a test that leaves one in the repository or the current folder fails."""
    places = {REPO / "mlflow.db", Path.cwd() / "mlflow.db"}
    before = {place for place in places if place.exists()}
    yield
    stray = sorted(str(place) for place in places - before if place.exists())
    assert not stray, f"{stray} appeared: something used MLflow before tracking.configure pointed it at a store"


@pytest.fixture(autouse=True)
def no_active_run_leaks_into_the_next_test(request):
    """A run left active in this process would make the next test's `start_run` fail ("already active"), so the
    outcome of a test would depend on the file before it (which pytest-xdist's processes change): the run is
    ended here and the test that left it fails, naming it."""
    yield
    import mlflow

    leaked = []
    for _ in range(10):  # runs nest
        run = mlflow.active_run()
        if run is None:
            break
        leaked.append(run.info.run_id)
        try:
            mlflow.end_run("KILLED")  # off the stack first, then marked in its store
        except Exception:  # the store is gone (a stopped server): the run is off this process's stack all the same
            pass
    if leaked:
        pytest.fail(f"{request.node.nodeid} left MLflow run(s) {leaked} active (end them, or run under "
                    "tracking.run / mlflow.start_run as a context)", pytrace=False)


def system_tool(name: str, *candidates: str) -> str:
    """The path of a system program, or a skip (a failure under CI) naming the Debian package."""
    import shutil

    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    message = f"'{name}' is not installed (Debian package; .ci/run installs it)"
    if REQUIRE_SYSTEM_TOOLS:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 90) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """Stops a server started with start_new_session=True, with every process it forked."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def artifacts_folder() -> Path:
    """Where tests leave files for people to look at (screenshots): $TEST_ARTIFACTS or test-artifacts/."""
    folder = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server (Debian's `postgresql`) in a temporary data folder on a free loopback port,
    stopped and removed after the session. Run as the `postgres` user when the tests run as root."""
    import glob
    import shutil
    import tempfile

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    initdb = system_tool(*(f"{folder}/initdb" for folder in reversed(binaries)), "initdb")
    folder = Path(initdb).parent
    base = Path(tempfile.mkdtemp(prefix="pg-"))
    data, port = base / "data", free_port()
    as_user = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(base, "postgres", "postgres")
        base.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*argv):
        done = subprocess.run([*as_user, *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{argv[0]}: {done.stderr[-1500:]}"

    run(str(folder / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run(str(folder / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "server.log"), "-o",
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        run(str(folder / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "search")
        yield f"postgresql://postgres@127.0.0.1:{port}/search"
    finally:
        subprocess.run([*as_user, str(folder / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def parse_c_array(text: str, symbol: str = "g_model_data") -> bytes:
    """The bytes of `symbol`'s array in a generated .cc file (what a C compiler would place in flash)."""
    body = re.search(rf"{symbol}\[\]\s*=\s*\{{(.*?)\}};", text, re.S)
    if not body:
        raise ValueError(f"no array {symbol} in the file")
    return bytes(int(token, 16) for token in re.findall(r"0x[0-9a-fA-F]{2}", body.group(1)))


@pytest.fixture(autouse=True, scope="module")
def _no_tracking_uri_across_modules():
    """The same between modules: a module-scoped fixture (a pipeline run in this process) sets the tracking URI
    outside any test, and runs before the per-test fixture below; a later module's child process (the pipeline run
    as a user runs it) would otherwise log into that store."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch):
    """Every test starts without MLFLOW_TRACKING_URI, and `mlflow.set_tracking_uri` (which writes it into this
    process's environment) does not outlive the test: a later test's child process must use the store of its own
    runtime.root, not an earlier test's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
