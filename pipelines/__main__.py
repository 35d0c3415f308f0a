"""Command line: `python -m pipelines <stage|all> --config configs/x.yaml [--set key=value] [--force]`.

It only parses, loads the config (failing before any work on a bad key or value), takes the workspace lock
and calls each stage's `run(config)`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import pipelines
from pipelines import config as config_module

DESCRIPTIONS = {
    "analyze": "profile the raw data: balance, ranges, duplicates, a quick baseline",
    "clean": "canonical images (uint8, fixed size) and the drop rules, with a cleaning log",
    "split": "stratified seeded train/val/test manifest with content hashes; normalizer fitted on train",
    "pretrain": "the project's own pretrained backbone (denoising autoencoder or source task), if the model needs one",
    "train": "fit the configured model, early-stopped on val; register it as champion",
    "tune": "random search on validation data; the best model becomes champion",
    "export": "TF-Lite variants validated on the LiteRT interpreter; the edge bundle",
    "evaluate": "the test split, exactly once, Keras and TF-Lite side by side",
    "gan": "DCGAN on the training images with a custom tf.GradientTape loop (not part of 'all')",
    "sr": "super-resolution x2 (SRGAN-style) on scikit-image's photographs, scored against bicubic (not in 'all')",
    "denoise": "denoising autoencoder on the training images: PSNR gain, examples, 2-D latent plot (not in 'all')",
    "segment": "U-Net vs an encoder-decoder without skips on digits-on-canvas masks; int8 on LiteRT (not in 'all')",
    "all": "every stage in order, as one MLflow parent run with a nested run per stage",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    fields = "config fields (--set key=value):\n" + "\n".join(config_module.describe())
    for name, text in DESCRIPTIONS.items():
        sub = commands.add_parser(name, help=text, description=text, epilog=fields,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--config", help="experiment YAML file (default: built-in defaults)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                         help="override one config field, e.g. train.epochs=3 (repeatable)")
        sub.add_argument("--force", action="store_true", help="rerun even if inputs and config are unchanged")
        sub.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for another run on the same workspace (default: stop at once)")
        if name in ("evaluate", "all"):
            sub.add_argument("--reuse-test", action="store_true",
                             help="allow another evaluation of a used test split (tagged test_reused=true)")
    return parser


def run_stage(name: str, config: config_module.Config, force: bool, reuse_test: bool = False):
    module = importlib.import_module(f"pipelines.{name}")
    if name == "evaluate":
        return module.run(config, force=force, reuse_test=reuse_test)
    return module.run(config, force=force)


def run_all(config: config_module.Config, force: bool, reuse_test: bool) -> list:
    from pipelines import tracking

    results = []
    with tracking.run(config, "pipeline"):
        for name in pipelines.STAGES:
            results.append(run_stage(name, config, force, reuse_test))
        tracking.log_metrics({key: value for result in results for key, value in result.metrics.items()
                              if isinstance(value, (int, float)) and key.startswith("test/")})
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_module.load(args.config, args.overrides)
    except config_module.ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    from pipelines import tracking, workspace

    started = time.perf_counter()
    try:
        with workspace.locked(config.root, config.experiment, timeout=args.wait):
            reuse = getattr(args, "reuse_test", False)
            if args.stage == "all":
                results = run_all(config, args.force, reuse)
            else:
                results = [run_stage(args.stage, config, args.force, reuse)]
    except (workspace.WorkspaceBusy, RuntimeError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"\nfinished in {time.perf_counter() - started:.1f}s")
    for result in results:
        state = "skipped (unchanged)" if result.skipped else f"run {result.run_id}"
        print(f"  {result.stage:9s} {state:38s} {result.folder}")
    print(f"MLflow store: {tracking.tracking_uri(config.root)}  (browse: make ui)")
    if any(result.stage == "export" for result in results):
        print(f"edge bundle: {workspace.bundle_dir(config.root, config.experiment)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
