"""sr: super-resolution x2 (SRGAN-style) on scikit-image's lossless photographs, `models.sr.SRGAN` trained by
`fit()`.

Two phases share one generator: first the pixel-loss phase (L1 by default), then adversarial fine-tuning with
the pixel loss + a content loss in the feature space of a network trained beforehand (the project's own
autoencoder, or VGG19) + an adversarial term, one tape per network. Training sees random patches of the
training photographs; evaluation upsamples each held-out photograph whole and scores PSNR and SSIM
(scikit-image) against bicubic upsampling of the same low-resolution input, made by anti-aliased bicubic
downscaling. A killed run resumes from its last checkpoint (kept per config under
`data/processed/<exp>/.backup/`). The work lives in `pipelines.training.superres`; this module orchestrates it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import skimage
import tf_keras as keras

from pipelines.core import config as config_module
from pipelines.core import stage, tracking, workspace
from pipelines.training import fitting, superres

SECTIONS = ("sr", "runtime.strategy")


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains the SR generator (pixel phase, then adversarial fine-tuning) and scores both on held-out photos."""
    settings = config.sr
    held_out = superres.photographs(settings.eval_images)
    inputs = {"skimage": skimage.__version__,
              **{name: workspace.sha256_bytes(image.tobytes()) for name, image in held_out.items()}}
    checkpoint_dir = stage.backup_dir(config, "sr", stage.fingerprint(config, "sr", SECTIONS, inputs))
    if force:  # a forced rerun starts from scratch; an interrupted one resumes
        shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def body(folder: Path) -> dict:
        training = superres.photographs(settings.train_images)
        superres.check_held_out(training, held_out, config.data.near_duplicate_tolerance)
        mlflow.log_params({"sr.train_photos": ",".join(training), "sr.eval_photos": ",".join(held_out)})
        low, high = superres.patches(list(training.values()), settings.patches, settings.patch_size, settings.seed)
        with fitting.strategy(config.runtime).scope():
            features = superres.content_network(settings, high, checkpoint_dir / "content_features.keras")
        generator = superres.train(config, features, low, high, checkpoint_dir)
        generators = {"pixel": keras.models.load_model(checkpoint_dir / "generator_pixel.keras")}
        shutil.copy2(checkpoint_dir / "generator_pixel.keras", folder / "generator_pixel.keras")
        if settings.adversarial_steps:
            generators["adversarial"] = generator
            superres.save_model(generator, folder / "generator_adversarial.keras")
        results = superres.evaluate(generators, held_out, settings.shave)
        metrics, table = superres.summarize(results)
        workspace.write_text(folder / "sr_scores.csv", table)
        superres.comparison_figure(results, folder / "sr_comparison.png")
        for name in ("sr_scores.csv", "sr_comparison.png"):
            mlflow.log_artifact(str(folder / name))
        tracking.log_metrics(metrics)
        gains = ", ".join(f"{method} {metrics[f'sr/psnr_{method}'] - metrics['sr/psnr_bicubic']:+.2f} dB"
                          for method in generators)
        print(f"[sr] held-out mean PSNR: bicubic {metrics['sr/psnr_bicubic']:.2f} dB; {gains}")
        return {**metrics, "sr/steps": settings.pixel_steps + settings.adversarial_steps}

    return stage.execute(config, "sr", SECTIONS, inputs, body, force)
