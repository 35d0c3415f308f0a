"""The dataset's own split (`split.strategy: predefined`): the names a source may give an item's split, and a
file of recordings and their splits.

Sources read what the data says (a `split` column of a table or of sensor recordings, a file of recordings and
their splits, an image folder's `train/`, `val/`, `test/` sub-folders); `pipelines/data/splits.py` keeps it.
A value that names no split stops the run with one line naming the file, the line and the value.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.core.errors import DataError

# what a dataset may write for each split, case and surrounding spaces aside
NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
         "test": "test", "testing": "test"}
SUB_FOLDERS = ("train", "val", "test")  # an image folder's own split: one sub-folder each, classes inside


def name(value: object, where: str) -> str:
    """'train', 'val' or 'test' for a value a dataset gives (train, training, val, valid, validation, dev, test,
    testing; any case).

    Raises:
        DataError: `where` (the file, line and column), then the value, in one line.
    """
    text = "" if value is None else str(value).strip()
    if not text:
        raise DataError(f"{where}: no split value (expected train, val or test)")
    found = NAMES.get(text.lower())
    if found is None:
        raise DataError(f"{where}: split value {text!r} is not train, val or test")
    return found


def read_file(path: Path, frame) -> dict[str, str]:
    """recording -> split from a file with the columns `recording` and `split` (text cells, as
    `signals.read_text` gives them). A recording listed twice is an error, even with the same split.

    Raises:
        DataError: naming the file, the line and the recording or value.
    """
    found: dict[str, str] = {}
    for row, (recording, value) in enumerate(zip(frame["recording"].str.strip(), frame["split"]), start=2):
        if not recording:
            raise DataError(f"{path}: line {row}, column 'recording': empty")
        if recording in found:
            raise DataError(f"{path}: line {row}: recording '{recording}' is listed twice")
        found[recording] = name(value, f"{path}: line {row}, column 'split'")
    return found


def across(hashes, given_split) -> set[int]:
    """The items whose content another given split holds too. Clean keeps such copies (its exact-duplicate rule
    would quietly take the later copy out of its split), so that split's leakage check stops on them, naming
    both."""
    if given_split is None:
        return set()
    found: dict = {}
    for key, name in zip(hashes, given_split):
        found.setdefault(key, set()).add(str(name))
    return {index for index, key in enumerate(hashes) if len(found[key]) > 1}
