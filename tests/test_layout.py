"""The house: one-way imports between the rooms, and one stage registry behind the CLI, make and the README."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
STAGE_NAMES = {stage.name for stage in STAGES}
ROOMS = {"core": 0, "data": 1, "training": 2}  # the library's rooms, bottom up: a room imports only lower ones


def _imports(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in the file names, cut to three parts
    (`from pipelines.stages import train` gives `pipelines.stages` and `pipelines.stages.train`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {".".join(name.split(".")[:3]) for name in names}


def back_edges(root: Path) -> list[str]:
    """Imports that point the wrong way: stage -> stage, library -> stage or CLI, a library room -> a higher one
    (core < data < training), models/deploy -> pipelines."""
    problems = []
    for path in sorted((root / "pipelines").rglob("*.py")):
        where = path.relative_to(root)
        is_stage = path.parent.name == "stages" and path.stem in STAGE_NAMES
        room = next((part for part in path.relative_to(root).parts[1:-1] if part in ROOMS), None)
        is_library = room is not None
        for name in sorted(_imports(path)):
            parts = name.split(".")
            if parts[:2] == ["pipelines", "stages"] and len(parts) > 2 and parts[2] in STAGE_NAMES:
                if is_stage and parts[2] != path.stem:
                    problems.append(f"stage {where} imports stage {name}")
                if is_library:
                    problems.append(f"library {where} imports stage {name}")
            if is_library and (parts[:2] == ["pipelines", "__main__"] or name == "pipelines.stages"):
                problems.append(f"library {where} imports {name}")
            if is_library and len(parts) > 1 and ROOMS.get(parts[1], -1) > ROOMS[room]:
                problems.append(f"library {where} ({room}) imports the higher room {name}")
    for package in ("models", "deploy"):
        for path in sorted((root / package).rglob("*.py")):
            problems += [f"{path.relative_to(root)} imports {name}" for name in sorted(_imports(path))
                         if name.split(".")[0] == "pipelines"]
    return problems


def test_imports_point_one_way():
    assert back_edges(ROOT) == []
    assert len(list((ROOT / "pipelines" / "stages").glob("*.py"))) == len(STAGES) + 2  # + __init__, __main__


def test_the_walk_catches_a_back_edge(tmp_path):
    for folder in ("pipelines/stages", "pipelines/training", "models", "deploy"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "pipelines/stages/tune.py").write_text("from pipelines.stages import train\n")
    (tmp_path / "pipelines/training/search.py").write_text("from pipelines.stages.train import fit_model\n")
    (tmp_path / "pipelines/core").mkdir()
    (tmp_path / "pipelines/core/stage.py").write_text("from pipelines.training import fitting\n")
    (tmp_path / "models/cnn.py").write_text("from pipelines.core.config import ModelConfig\n")
    problems = back_edges(tmp_path)
    assert problems == ["library pipelines/core/stage.py (core) imports the higher room pipelines.training",
                        "library pipelines/core/stage.py (core) imports the higher room pipelines.training.fitting",
                        "stage pipelines/stages/tune.py imports stage pipelines.stages.train",
                        "library pipelines/training/search.py imports stage pipelines.stages.train",
                        "models/cnn.py imports pipelines.core.config"]


def test_cli_make_and_readme_list_the_stages_of_the_registry():
    cli = subprocess.run([sys.executable, "-m", "pipelines", "--help"], capture_output=True, text=True, check=True)
    listed = re.findall(r"^    ([\w-]+)(?: |$)", cli.stdout, re.MULTILINE)
    assert listed == [stage.name for stage in STAGES] + ["all", "tune-worker", "server", "init"]
    make = subprocess.run(["make", "--no-print-directory", "help", f"PYTHON={sys.executable}"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    table = (ROOT / "docs" / "stages" / "index.md").read_text()  # the README links to it
    for stage in STAGES:
        assert re.search(rf"^  {re.escape(stage.make_target)} +{re.escape(stage.description)}", make, re.MULTILINE)
        assert f"| [`{stage.make_target}`]" in table, f"docs/stages/index.md's table misses {stage.make_target}"
        dry = subprocess.run(["make", "--no-print-directory", "-n", "-o", "setup", stage.make_target,
                              f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True, text=True, check=True)
        assert f"-m pipelines {stage.name} --config" in dry.stdout


@pytest.mark.parametrize("path", ["pipelines", "models", "deploy"])
def test_no_module_sets_the_keras_switch_but_models(path):
    setters = [str(file.relative_to(ROOT)) for file in (ROOT / path).rglob("*.py")
               if "TF_USE_LEGACY_KERAS\", \"1\")" in file.read_text()]
    assert setters == (["models/__init__.py"] if path == "models" else [])


def test_a_test_that_leaves_an_mlflow_run_active_fails_naming_it(tmp_path):
    """The suite's own guard (tests/conftest.py): a leaked run would fail whichever test starts a run next."""
    leaky = tmp_path / "test_leaky.py"
    leaky.write_text("import mlflow\n\n\ndef test_leaves_a_run(tmp_path):\n"
                     "    mlflow.set_tracking_uri(f'sqlite:///{tmp_path}/mlflow.db')\n    mlflow.start_run()\n\n\n"
                     "def test_ends_its_run(tmp_path):\n"
                     "    mlflow.set_tracking_uri(f'sqlite:///{tmp_path}/mlflow.db')\n"
                     "    with mlflow.start_run():\n        pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                             str(leaky)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "test_leaves_a_run left MLflow run(s)" in result.stdout
    # the leaking test passed and then errored at teardown; the next one started its run: the leaked one was ended
    assert re.search(r"\b2 passed\b.*\b1 error\b", result.stdout), result.stdout[-500:]
