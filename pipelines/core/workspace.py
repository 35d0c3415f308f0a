"""Per-experiment workspace: where each stage writes, atomically, with a manifest; and the workspace lock.

Layout under the project root (`runtime.root`):
    data/interim/<experiment>/<stage>/     analyze, clean
    data/processed/<experiment>/<stage>/   split, train, tune, export, evaluate
    deploy/bundles/<experiment>/           the edge bundle
Each stage folder is built in a temporary sibling and renamed into place, so a crash leaves either the old
outputs or the new ones, never a mixture. `manifest.json` is written last and names the stage's fingerprint
(config sections and input hashes), its outputs' hashes and its MLflow run id.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock

from pipelines.core.errors import DataError, StageError

INTERIM_STAGES = ("analyze", "clean")
MANIFEST = "manifest.json"


class WorkspaceBusy(StageError):
    """Another process holds the experiment's workspace lock."""


def stage_dir(root: Path, experiment: str, stage: str) -> Path:
    """The folder a stage writes to."""
    tier = "interim" if stage in INTERIM_STAGES else "processed"
    return Path(root) / "data" / tier / experiment / stage


def bundle_dir(root: Path, experiment: str) -> Path:
    return Path(root) / "deploy" / "bundles" / experiment


@functools.cache
def umask() -> int:
    """The process umask, read once: from /proc where Linux shows it, else by setting it and back."""
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0)
    os.umask(old)
    return old


def file_mode() -> int:
    """What `open` gives a new file (0644 under the usual umask 022); mkstemp's 0600 would lock others out."""
    return 0o666 & ~umask()


def folder_mode() -> int:
    """What `mkdir` gives a new folder (0755 under umask 022); mkdtemp's 0700 would lock others out."""
    return 0o777 & ~umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        temporary.chmod(file_mode())
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and a trailing newline: the same data always gives the same bytes."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, canonical_json(data))


def csv_text(header: tuple[str, ...], rows: list[tuple]) -> str:
    """CSV text with a header row (for cleaning and imputation logs)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


LOG_HEADER = ("id", "rule", "action", "detail")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(data: Any) -> str:
    return sha256_bytes(canonical_json(data).encode("utf-8"))


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    return read_json(path) if path.is_file() else None


def is_fresh(folder: Path, stage_fingerprint: str) -> bool:
    """True when the folder holds complete outputs made from the same fingerprint."""
    manifest = read_manifest(folder)
    if not manifest or manifest.get("fingerprint") != stage_fingerprint:
        return False
    return all(
        (Path(folder) / name).is_file() and sha256_file(Path(folder) / name) == digest
        for name, digest in manifest.get("outputs", {}).items()
    )


def clear_debris(folder: Path) -> list[Path]:
    """Removes the staging folders a run killed mid-stage (SIGKILL, power loss) left beside `folder`; the
    workspace lock says no other run is writing here now, so what is left is debris. Returns what it removed."""
    folder = Path(folder)
    stale = sorted(folder.parent.glob(f".{folder.name}.*.tmp")) if folder.parent.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


@contextlib.contextmanager
def staging(folder: Path) -> Iterator[Path]:
    """Yields an empty temporary folder that replaces `folder` when the block succeeds."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    clear_debris(folder)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        temporary.chmod(folder_mode())
        yield temporary
        retired = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        if folder.exists():
            os.replace(folder, retired)
        os.replace(temporary, folder)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def write_manifest(folder: Path, stage_fingerprint: str, inputs: dict, config: dict, run_id: str | None,
                   metrics: dict) -> dict:
    """Hashes every file in `folder` and writes the manifest last."""
    outputs = {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    manifest = {
        "fingerprint": stage_fingerprint,
        "inputs": inputs,
        "config": config,
        "run_id": run_id,
        "metrics": metrics,
        "outputs": outputs,
    }
    write_json(Path(folder) / MANIFEST, manifest)
    return manifest


@contextlib.contextmanager
def locked(root: Path, experiment: str, timeout: float = 0.0) -> Iterator[None]:
    """Holds the experiment's workspace lock; a second holder waits `timeout` seconds, then stops.

    Raises:
        WorkspaceBusy: another process holds the lock, named by its pid and start time.
    """
    folder = Path(root) / "data" / "processed" / experiment
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(folder / ".lock")
    owner = folder / ".lock.owner"
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        holder = owner.read_text().strip() if owner.exists() else "unknown process"
        raise WorkspaceBusy(
            f"workspace {folder} is in use by {holder}; wait for it to finish "
            "(a stage never half-writes its outputs, so nothing is corrupted)"
        ) from None
    try:
        write_text(owner, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def save_arrays(folder: Path, prefix: str, **arrays: Any) -> None:
    """Saves each array as `<prefix>_<name>.npy` (np.save output is byte-stable, unlike npz)."""
    import numpy as np

    for name, array in arrays.items():
        with atomic_path(Path(folder) / f"{prefix}_{name}.npy") as temporary:
            with open(temporary, "wb") as stream:
                np.save(stream, np.asarray(array), allow_pickle=False)


def gather_rows(source: Any, index: Any) -> Any:
    """`source[index]` in the order of `index`, read in ascending order (sequential pages of a memmap)."""
    import numpy as np

    index = np.asarray(index)
    order = np.argsort(index, kind="stable")
    rows = np.empty((len(index), *source.shape[1:]), dtype=source.dtype)
    rows[order] = source[index[order]]
    return rows


def load_arrays(folder: Path, prefix: str, *names: str) -> tuple:
    """Loads `<prefix>_<name>.npy` arrays (labels, ids, keys, windows, table rows: images live in shards)."""
    import numpy as np

    arrays = []
    for name in names:
        path = Path(folder) / f"{prefix}_{name}.npy"
        if not path.is_file():
            raise StageError(f"{path}: missing; rerun the stage that writes it with --force")
        arrays.append(np.load(path, allow_pickle=False))
    return tuple(arrays)
