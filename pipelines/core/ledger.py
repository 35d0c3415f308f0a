"""The test ledger: every use of a test set, kept in the tracking store and keyed by the content of the test items.

Each evaluation is one run of the MLflow experiment `test-ledger` (tags: experiment, evaluate run, time,
procedure; artifact `test_items.json`: the sorted content hashes of the test items). Because it lives in the
store, `make clean` does not erase it; because it keys on item content, a new `split.seed` or another experiment
name over the same pool finds the earlier use. Evaluate refuses a test split that shares items with any earlier
use unless `--reuse-test`; split can keep the used items out of a new test split (`split.exclude_used_from_test`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipelines.core import workspace
from pipelines.core.errors import StageError

LEDGER = "test-ledger"  # the MLflow experiment that holds the uses (a reserved experiment name)
ITEMS = "test_items.json"
PROGRESS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class TestSetUsed(StageError):
    """The test items were already evaluated and reuse was not asked for, or the procedure changed."""


def test_keys(split_folder: Path) -> list[str]:
    """The content hash of every test item of a split (the manifest's `content`, else its `sha256`), sorted."""
    items = workspace.read_json(Path(split_folder) / "split_manifest.json")["items"]
    return sorted(item.get("content", item["sha256"]) for item in items if item["split"] == "test")


def _experiment_id(create: bool) -> str | None:
    found = mlflow.get_experiment_by_name(LEDGER)
    if found is not None or not create:
        return found.experiment_id if found is not None else None
    uri = mlflow.get_tracking_uri()
    location = None  # a tracking server places artifacts itself; a local store keeps them beside its database
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "artifacts" / LEDGER).as_uri()
    try:
        return mlflow.create_experiment(LEDGER, artifact_location=location, tags={"kind": "test ledger"})
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow.get_experiment_by_name(LEDGER).experiment_id


def _uses() -> list:
    """The recorded uses, oldest first (a use whose items were not all written is no use: its run never
    finished)."""
    experiment = _experiment_id(create=False)
    if experiment is None:
        return []
    return MlflowClient().search_runs([experiment], "attributes.status = 'FINISHED'",
                                      order_by=["attributes.start_time ASC"], max_results=50000)


def _items(run) -> list[str]:
    quiet = os.environ.get(PROGRESS)
    os.environ[PROGRESS] = "false"  # no download bar per use
    try:
        return json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/{ITEMS}"))
    finally:
        if quiet is None:
            os.environ.pop(PROGRESS)
        else:
            os.environ[PROGRESS] = quiet


def earlier_uses(keys: list[str]) -> list[dict]:
    """Every recorded use that shares items with `keys`, oldest first: its tags, the number of shared items and
    whether its test set was exactly this one."""
    wanted, found = set(keys), []
    for run in _uses():
        used = _items(run)
        shared = len(wanted.intersection(used))
        if shared:
            found.append({**run.data.tags, "shared": shared, "same": shared == len(wanted) == len(used),
                          "procedure": json.loads(run.data.tags.get("procedure", "{}"))})
    return found


def used_keys() -> set[str]:
    """The content hashes of every test item ever evaluated in this store."""
    return {key for run in _uses() for key in _items(run)}


def check(uses: list[dict], count: int, reuse_test: bool, fixed: dict) -> None:
    """Refuses a test set that shares items with an earlier use (unless `reuse_test`), and a changed procedure
    on the very same test set.

    Raises:
        TestSetUsed: naming how many items, when, by which run and experiment.
    """
    if uses and not reuse_test:
        first = uses[0]
        raise TestSetUsed(
            f"{first['shared']} of the {count} test items were first evaluated on {first['time']} by MLflow run "
            f"{first['evaluate_run_id']} ({len(uses)} use(s) so far, experiment '{first['experiment']}'); the test "
            "set is used once. Pass --reuse-test to evaluate again, tagged test_reused=true, or split again with "
            "split.exclude_used_from_test=true, which keeps the used items out of the new test split")
    same = [use for use in uses if use["same"]]
    if same and same[0]["procedure"] != fixed:
        raise TestSetUsed(f"the evaluation procedure changed since the first use of this test split: "
                          f"{same[0]['procedure']} then, {fixed} now; the procedure stays fixed")


def record(keys: list[str], entry: dict) -> dict:
    """Writes one use of the test items into the store; returns the tags it recorded."""
    client = MlflowClient()
    tags = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "items": str(len(keys)),
            **{key: value if isinstance(value, str) else json.dumps(value) for key, value in entry.items()}}
    run = client.create_run(_experiment_id(create=True), tags=tags,
                            run_name=f"{entry.get('experiment', '?')} test use")
    client.log_text(run.info.run_id, json.dumps(keys), ITEMS)
    client.set_terminated(run.info.run_id)
    return tags
