"""Benchmark `architectures`: the denoising autoencoder on digits (validation PSNR gain over the noisy input)
and U-Net against the same encoder-decoder without skips on the generated digits-on-canvas set (same data,
same epochs), the U-Net also as full int8 on the LiteRT interpreter. All from one run."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelines.core import config as config_module
from pipelines.stages import clean, denoise, segment, split

WORK = Path(__file__).parent / ".work" / "architectures"


def run() -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    config = config_module.load("configs/digits.yaml", [f"runtime.root={WORK}", "runtime.verbose=0"])
    clean.run(config)
    split.run(config)
    noise = denoise.run(config).metrics
    masks = segment.run(config).metrics
    return {"denoise_psnr_noisy_db": round(noise["denoise/val_psnr_noisy_db"], 2),
            "denoise_psnr_denoised_db": round(noise["denoise/val_psnr_denoised_db"], 2),
            "denoise_psnr_gain_db": round(noise["denoise/val_psnr_gain_db"], 2),
            "latent2_psnr_db": round(noise["denoise/latent_val_psnr_denoised_db"], 2),
            "unet_miou": round(masks["segment/unet/val_miou"], 4),
            "plain_miou": round(masks["segment/plain/val_miou"], 4),
            "unet_pixel_accuracy": round(masks["segment/unet/val_pixel_accuracy"], 4),
            "plain_pixel_accuracy": round(masks["segment/plain/val_pixel_accuracy"], 4),
            "unet_float32_tflite_miou": round(masks["segment/unet_tflite_float32/miou"], 4),
            "unet_int8_miou": round(masks["segment/unet_tflite_int8/miou"], 4),
            "unet_int8_size_ratio": round(masks["segment/unet_tflite_int8/size_bytes"]
                                          / masks["segment/unet_tflite_float32/size_bytes"], 3)}
