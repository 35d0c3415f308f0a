"""Benchmark `gan`: DCGAN and conditional DCGAN on digits (Fréchet distances in a real-data classifier's
feature space, the conditional label accuracy), the speed of the GAN model's compiled `train_step` (XLA and
tf.function alone) against the same step run eagerly, and super-resolution x2 on scikit-image's held-out
photographs (mean PSNR and SSIM of the pixel-loss generator, of the adversarially fine-tuned one and of bicubic
upsampling), all in one run.

`fd_ratio_to_real_floor`: the generator's Fréchet distance over the real-vs-real one (real training against
real validation images, the floor a perfect generator would reach with this many samples), the mean over the
plain DCGAN trained from `SEEDS` (`gan.seed` also seeds the classifier whose features the distances are taken
in); one seed decides too much (2.16 for seed 0, 1.33 for seed 1 on the same code). `fd_generated`,
`fd_untrained` and `fd_real` are seed 0's; `conditional_fd_ratio_to_real_floor` is the conditional GAN's, seed 0.
`sr_psnr_gain_db`: the pixel-loss generator's mean PSNR minus bicubic's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.data import splits
from pipelines.stages import clean, gan, split, sr
from pipelines.training import fitting, generative

WORK = Path(__file__).parent / ".work" / "gan"
SEEDS = (0, 1, 2)  # gan.seed of the plain DCGAN runs whose Fréchet ratios are averaged


def _step_speedups(config: config_module.Config, images: np.ndarray, labels: np.ndarray,
                   steps: int = 30) -> dict[str, float]:
    """Seconds per eager step over seconds per compiled step, same model settings, same batch.

    What is timed: one `DCGAN.train_step` on one batch of `gan.batch_size` real images (the discriminator's and
    the generator's updates, the moving average of the generator, the loss trackers), with its losses read back
    to the host after every step, all three by `generative.step_milliseconds`: XLA-compiled and as a tf.function
    alone (the two that `gan.jit_compile=auto` chooses between at the start of training), and eager.
    `compiled_step_speedup` is the speedup of the one `auto` keeps, the faster. `fit()`'s own loop and the
    input pipeline are not timed."""
    settings, strategy = config.gan, fitting.strategy(config.runtime)
    batch = generative.first_batch(images, labels, settings.batch_size)
    timings = generative.step_milliseconds(settings, images.shape[1:], strategy, 0, batch, steps,
                                           ("xla", "graph", "eager"))
    eager, compiled = timings.pop("eager"), timings
    return {"compiled_step_speedup": round(eager / min(compiled.values()), 2),
            "xla_step_speedup": round(eager / compiled["xla"], 2),
            "graph_step_speedup": round(eager / compiled["graph"], 2),
            "step_ms_eager": round(eager, 1), "step_ms_xla": round(compiled["xla"], 1),
            "step_ms_graph": round(compiled["graph"], 1)}


def run() -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    base = config_module.load("configs/digits.yaml", [f"runtime.root={WORK}", "runtime.verbose=0"])
    clean.run(base)
    split.run(base)
    plain = gan.run(base).metrics
    ratios = [plain["gan/fid"] / plain["gan/fid_real_train_vs_val"]]
    for seed in SEEDS[1:]:  # the same GAN from other seeds (its folder is replaced; the metrics are kept)
        other = gan.run(config_module.replace_path(base, "gan.seed", seed)).metrics
        ratios.append(other["gan/fid"] / other["gan/fid_real_train_vs_val"])
    conditional = config_module.replace_path(base, "gan.conditional", True)
    conditional = config_module.replace_path(conditional, "experiment", "digits_cgan")
    clean.run(conditional)
    split.run(conditional)
    labelled = gan.run(conditional).metrics
    photos = sr.run(base).metrics
    folder = workspace.stage_dir(WORK, "digits", "split")
    images, (labels,) = splits.split_items(folder, "train").array(), workspace.load_arrays(folder, "train", "y")
    return {"fd_generated": plain["gan/fid"], "fd_untrained": plain["gan/fid_untrained_generator"],
            "fd_real": plain["gan/fid_real_train_vs_val"],
            "fd_ratio_generated_to_untrained": plain["gan/fid"] / plain["gan/fid_untrained_generator"],
            "fd_ratio_to_real_floor": round(float(np.mean(ratios)), 3),
            "fd_ratio_to_real_floor_seeds": [round(ratio, 3) for ratio in ratios],
            "conditional_fd_generated": labelled["gan/fid"],
            "conditional_fd_ratio_to_real_floor": labelled["gan/fid"] / labelled["gan/fid_real_train_vs_val"],
            "conditional_label_accuracy": labelled["gan/conditional_label_accuracy"],
            **_step_speedups(base, images, labels),
            "sr_psnr": round(photos["sr/psnr_pixel"], 3), "sr_psnr_bicubic": round(photos["sr/psnr_bicubic"], 3),
            "sr_psnr_gain_db": round(photos["sr/psnr_pixel"] - photos["sr/psnr_bicubic"], 3),
            "sr_ssim": round(photos["sr/ssim_pixel"], 4), "sr_ssim_bicubic": round(photos["sr/ssim_bicubic"], 4),
            "sr_psnr_adversarial": round(photos["sr/psnr_adversarial"], 3),
            "sr_ssim_adversarial": round(photos["sr/ssim_adversarial"], 4)}
