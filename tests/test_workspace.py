import subprocess
import sys
import time

import pytest

from pipelines.core import workspace


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "report.json"
    workspace.write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with workspace.atomic_path(target) as temporary:
            temporary.write_text('{"version": 2, "half')
            raise RuntimeError("crash while writing")
    assert workspace.read_json(target) == {"version": 1}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json"]


def test_staging_replaces_a_stage_folder_whole_or_not_at_all(tmp_path):
    folder = tmp_path / "stage"
    with workspace.staging(folder) as staged:
        (staged / "a.txt").write_text("first")
    with pytest.raises(ValueError):
        with workspace.staging(folder) as staged:
            (staged / "a.txt").write_text("second")
            raise ValueError("stage failed halfway")
    assert (folder / "a.txt").read_text() == "first"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["stage"]
    with workspace.staging(folder) as staged:
        (staged / "b.txt").write_text("third")
    assert sorted(path.name for path in folder.iterdir()) == ["b.txt"]


def test_freshness_needs_same_fingerprint_and_untouched_outputs(tmp_path):
    (tmp_path / "out.txt").write_text("data")
    workspace.write_manifest(tmp_path, "abc", {}, {}, "run1", {})
    assert workspace.is_fresh(tmp_path, "abc")
    assert not workspace.is_fresh(tmp_path, "abd")
    (tmp_path / "out.txt").write_text("tampered")
    assert not workspace.is_fresh(tmp_path, "abc")


def test_canonical_json_is_byte_stable():
    assert workspace.canonical_json({"b": 1, "a": [1, 2]}) == workspace.canonical_json({"a": [1, 2], "b": 1})


def test_second_process_on_the_same_workspace_stops_with_a_clear_message(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pipelines.core import workspace\n"
         f"with workspace.locked({str(tmp_path)!r}, 'exp'):\n    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(workspace.WorkspaceBusy, match=rf"in use by pid {holder.pid} since"):
            with workspace.locked(tmp_path, "exp", timeout=0.5):
                pass
        assert time.monotonic() - started >= 0.5
    finally:
        holder.kill()
        holder.wait()
    with workspace.locked(tmp_path, "exp"):  # free again once the holder is gone
        pass
