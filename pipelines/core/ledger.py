"""The test ledger: which test splits were evaluated, when, by which run and procedure, so a test split is
used once (`test_ledger.json` beside the experiment's split folder). Evaluate keeps it."""

from __future__ import annotations

from pathlib import Path

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.core.errors import StageError


class TestSetUsed(StageError):
    """The test split was already evaluated and reuse was not asked for, or the procedure changed."""


def ledger_path(config: config_module.Config) -> Path:
    return workspace.stage_dir(config.root, config.experiment, "split").parent / "test_ledger.json"


def previous_uses(config: config_module.Config, manifest_sha: str) -> list[dict]:
    path = ledger_path(config)
    return workspace.read_json(path).get(manifest_sha, []) if path.is_file() else []


def check_ledger(config: config_module.Config, manifest_sha: str, reuse_test: bool, fixed: dict) -> None:
    uses = previous_uses(config, manifest_sha)
    if uses and not reuse_test:
        first = uses[0]
        raise TestSetUsed(
            f"the test split (manifest sha256 {manifest_sha[:12]}) was first evaluated on {first['time']} by "
            f"MLflow run {first['run_id']} ({len(uses)} use(s) so far); the test set is used once. "
            "Pass --reuse-test to evaluate again, tagged test_reused=true.")
    if uses and uses[0].get("procedure") != fixed:
        raise TestSetUsed(f"the evaluation procedure changed since the first use of this test split: "
                          f"{uses[0].get('procedure')} then, {fixed} now; the procedure stays fixed")


def record(config: config_module.Config, manifest_sha: str, entry: dict) -> None:
    """Appends one use of the test split to the ledger."""
    ledger = workspace.read_json(ledger_path(config)) if ledger_path(config).is_file() else {}
    ledger.setdefault(manifest_sha, []).append(entry)
    workspace.write_json(ledger_path(config), ledger)
