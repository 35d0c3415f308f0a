"""What the pipeline leaves behind: outputs others can read (the umask decides, not mkstemp's 0600), and no
stray MLflow store in the folder a command runs from."""

import os
import stat
import subprocess

import pytest

from pipelines.core import workspace
from tests.conftest import REPO, TINY, stage_command


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask(request):
    """Sets the process umask to `request.param` for one test, then puts the old one back."""
    old = os.umask(request.param)
    workspace.umask.cache_clear()
    try:
        yield request.param
    finally:
        os.umask(old)
        workspace.umask.cache_clear()


@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"),
                         [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)],
                         indirect=["umask"], ids=["umask-022", "umask-002", "umask-077"])
def test_outputs_get_the_modes_the_umask_allows(tmp_path, umask, file_mode, folder_mode):
    written = [workspace.write_text(tmp_path / "a.txt", "text"), workspace.write_json(tmp_path / "b.json", {}),
               workspace.write_bytes(tmp_path / "c.bin", b"\0")]
    assert [_mode(path) for path in written] == [file_mode] * 3
    folder = tmp_path / "stage"
    for _ in range(2):  # a new folder, then one that replaces it
        with workspace.staging(folder) as staged:
            (staged / "nested").mkdir()
            workspace.write_json(staged / "nested" / "manifest.json", {"a": 1})
            workspace.write_bytes(staged / "model.tflite", b"\0")
            (staged / "labels.txt").write_text("0\n")  # a plain write, as Keras and TFRecordWriter do
    assert [_mode(path) for path in (folder, folder / "nested")] == [folder_mode] * 2
    files = [folder / "nested" / "manifest.json", folder / "model.tflite", folder / "labels.txt"]
    assert [_mode(path) for path in files] == [file_mode] * 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt", "b.json", "c.bin", "stage"]


@pytest.mark.slow
def test_a_stage_run_from_another_folder_leaves_no_mlflow_store_there(tmp_path):
    """MLflow used before `tracking.configure` creates `./mlflow.db`: a stage logs only to its project's store."""
    here, root = tmp_path / "elsewhere", tmp_path / "project"
    here.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(stage_command("analyze", [*TINY, f"runtime.root={root}"]), cwd=here, capture_output=True,
                          text=True, timeout=300, env={**environment, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(here.iterdir()) == [] and (root / "mlruns" / "mlflow.db").is_file()
