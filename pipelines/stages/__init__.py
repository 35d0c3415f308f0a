"""The stages, in one registry that the CLI, `make help` and `make <stage>` all read.

Each stage is a module of this package with one public `run(config, force=False, **options) -> StageResult`;
stages never import each other and talk only through files and MLflow. This module imports nothing beyond
the standard library, so `python -m pipelines.stages` answers the Makefile before the virtual environment
exists.
"""

from __future__ import annotations

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class Option:
    """A command-line switch a stage accepts beyond --config, --set, --force and --wait; passed to its `run`."""

    flag: str
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    description: str
    in_all: bool  # part of `python -m pipelines all` (make pipeline)
    target: str = ""  # the make target, when it differs from the name
    options: tuple[Option, ...] = ()

    @property
    def make_target(self) -> str:
        return self.target or self.name

    def run(self, config, force: bool = False, **options):
        """Imports the stage's module (only now, so the registry stays light) and calls its `run`."""
        module = importlib.import_module(f"{__name__}.{self.name}")
        return module.run(config, force=force, **{option.dest: options[option.dest] for option in self.options
                                                  if option.dest in options})


ALLOW_UNBLESSED = Option("--allow-unblessed", "bundle a model that fails its gates on validation data, tagged "
                         "blessed: false")
REUSE_TEST = Option("--reuse-test", "allow another evaluation of a used test split (tagged test_reused=true)")

STAGES = (
    Stage("analyze", "profile the raw data: balance, ranges, duplicates, a quick baseline", True),
    Stage("clean", "canonical images (uint8, fixed size) and the drop rules, with a cleaning log", True,
          target="clean-data"),  # `make clean` removes outputs, as Make users expect
    Stage("split", "stratified seeded train/val/test manifest with content hashes; normalizer fitted on train", True),
    Stage("pretrain", "the project's own pretrained backbone (denoising autoencoder or source task), if the model "
          "needs one", True),
    Stage("train", "fit the configured model, early-stopped on val; register it (champion if it is the best)", True),
    Stage("tune", "random search, then a grid, on validation data; the best model becomes champion if better", True),
    Stage("export", "gates on validation data, then TF-Lite variants of the champion validated on the LiteRT "
          "interpreter; the edge bundle", True, options=(ALLOW_UNBLESSED,)),
    Stage("evaluate", "the test split, exactly once, Keras and TF-Lite side by side", True, options=(REUSE_TEST,)),
    Stage("gan", "DCGAN on the training images with a custom tf.GradientTape loop", False),
    Stage("sr", "super-resolution x2 (SRGAN-style) on scikit-image's photographs, scored against bicubic", False),
    Stage("denoise", "denoising autoencoder on the training images: PSNR gain, examples, 2-D latent plot", False),
    Stage("segment", "U-Net vs an encoder-decoder without skips on digits-on-canvas masks; int8 on LiteRT", False),
)
BY_NAME = {stage.name: stage for stage in STAGES}


def pipeline() -> tuple[Stage, ...]:
    """The stages of `all`, in order, for every data kind and task (anomaly detection included)."""
    return tuple(stage for stage in STAGES if stage.in_all)
