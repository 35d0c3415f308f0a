"""Which process of a multi-worker cluster this is, read from `TF_CONFIG` (TensorFlow's own cluster spec).

Under `runtime.strategy: multi_worker` every worker runs the same stage command; only the chief writes the stage
folder, registers the model and logs to MLflow. The others train in step with it and write to a temporary folder
and a throwaway MLflow store (the pattern of TensorFlow's multi-worker Keras guide).
"""

from __future__ import annotations

import json
import os

from pipelines.core.errors import ConfigError


def task(strategy: str | None = None) -> tuple[str, int] | None:
    """(task type, index) from TF_CONFIG, or None when not running under `multi_worker`.

    Raises:
        ConfigError: `multi_worker` without a usable TF_CONFIG.
    """
    if strategy != "multi_worker":
        return None
    text = os.environ.get("TF_CONFIG", "")
    try:
        spec = json.loads(text)
        cluster, kind, index = spec["cluster"], spec["task"]["type"], int(spec["task"]["index"])
        members = cluster[kind]
    except (ValueError, KeyError, TypeError):
        raise ConfigError("runtime.strategy: 'multi_worker' needs TF_CONFIG, a JSON cluster spec such as "
                          '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                          f'"index": 0}}}}; got {text[:80]!r}') from None
    if not isinstance(members, list) or not 0 <= index < len(members):
        raise ConfigError(f"TF_CONFIG: task index {index} is outside cluster.{kind} ({members!r})")
    return kind, index


def is_chief(strategy: str | None) -> bool:
    """True for a single process, for the `chief` task, and for worker 0 of a cluster without a chief."""
    found = task(strategy)
    if found is None:
        return True
    kind, index = found
    cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
