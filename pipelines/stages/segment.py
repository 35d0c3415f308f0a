"""segment: U-Net against the same encoder-decoder without skip connections, per-pixel classification.

Both models get the same data, epochs and optimizer; neither is chosen on validation data (fixed epochs),
so the validation figures are held-out estimates. Metrics: pixel accuracy and IoU per class from one
confusion matrix over all validation pixels, mean IoU over the classes present. The U-Net is exported to
TF-Lite float32 and full int8 and scored again on the LiteRT interpreter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import sklearn
import tf_keras as keras

from models import unet
from pipelines.core import config as config_module
from pipelines.core import figures, stage, tracking, workspace
from pipelines.data import segmentation, sources
from pipelines.training import fitting
from pipelines.training import metrics as measures


def train_model(name: str, skips: bool, settings: config_module.SegmentConfig,
                data: segmentation.SegmentationData, verbose: int = 0, backup_dir: Path | None = None) -> keras.Model:
    keras.utils.set_random_seed(settings.seed)
    model = unet.build_unet(settings.filters, settings.num_classes, data.x_train.shape[1:], skips=skips)
    model.compile(keras.optimizers.Adam(settings.learning_rate), unet.LOSSES[settings.loss](),
                  metrics=["accuracy"])
    fitting.guarded_fit(model, data.x_train.astype(np.float32), data.y_train, epochs=settings.epochs,
                        validation_data=(data.x_val.astype(np.float32), data.y_val), batch_size=settings.batch_size,
                        prefix=f"segment/{name}/", verbose=verbose, backup_dir=backup_dir)
    return model


def export_unet(model: keras.Model, settings: config_module.SegmentConfig, data: segmentation.SegmentationData,
                folder: Path, keras_masks: np.ndarray) -> dict:
    """float32 and int8 TF-Lite, each run on LiteRT over the validation canvases."""
    import deploy.edge.predict as edge
    from deploy import tflite

    representative = data.x_train[np.random.default_rng(settings.seed).permutation(len(data.x_train))
                                   [:settings.representative_samples]]
    metrics = {}
    for variant in ("float32", "int8"):
        flatbuffer = tflite.convert(model, variant, representative)
        workspace.write_bytes(folder / f"unet_{variant}.tflite", flatbuffer)
        masks = edge.LiteRTModel(flatbuffer).predict(data.x_val).argmax(axis=-1)
        result = measures.segmentation(data.y_val, masks, settings.num_classes)
        metrics.update({f"segment/unet_tflite_{variant}/miou": result["miou"],
                        f"segment/unet_tflite_{variant}/pixel_accuracy": result["pixel_accuracy"],
                        f"segment/unet_tflite_{variant}/pixel_agreement": float((masks == keras_masks).mean()),
                        f"segment/unet_tflite_{variant}/size_bytes": len(flatbuffer)})
    return metrics


def prediction_grid(data: segmentation.SegmentationData, predictions: dict[str, np.ndarray], path: Path,
                    count: int = 6) -> None:
    """Rows of validation canvases: image, true mask, then each model's mask (colours by class)."""
    columns = ["image", "truth", *predictions]
    figure, axes = plt.subplots(count, len(columns), figsize=(1.8 * len(columns), 1.8 * count), squeeze=False)
    classes = len(data.class_names)
    for row in range(count):
        panels = [data.x_val[row, ..., 0], data.y_val[row], *(masks[row] for masks in predictions.values())]
        for column, (title, panel) in enumerate(zip(columns, panels)):
            axis = axes[row, column]
            if column == 0:
                axis.imshow(panel, cmap="gray", vmin=0, vmax=255)
            else:
                axis.imshow(panel, cmap="tab20", vmin=0, vmax=max(classes - 1, 19), interpolation="nearest")
            axis.axis("off")
            if row == 0:
                axis.set_title(title, fontsize=9)
    figures.save(figure, path)


def per_class_table(names: tuple[str, ...], results: dict[str, dict]) -> str:
    header = ("class", *(f"{model}_iou" for model in results))
    rows = [(name, *(f"{result['iou'][index]:.4f}" for result in results.values()))
            for index, name in enumerate(names)]
    return workspace.csv_text(header, rows)


SECTIONS = ("segment",)


def _inputs(config: config_module.Config) -> dict:
    settings = config.segment
    if settings.source == "generated":
        return {"generator": f"scikit-learn {sklearn.__version__} digits"}
    return {name: sources.folder_fingerprint(Path(config.root) / getattr(settings, name))
            for name in ("images_dir", "masks_dir")}


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Trains the U-Net and the plain encoder-decoder on the same data, scores both, exports the U-Net."""
    settings = config.segment
    inputs = _inputs(config)
    backup = stage.backup_dir(config, "segment", stage.fingerprint(config, "segment", SECTIONS, inputs))
    if force:  # a forced rerun starts from scratch; an interrupted one resumes
        shutil.rmtree(backup, ignore_errors=True)

    def body(folder: Path) -> dict:
        data = segmentation.load(settings, config.root)
        mlflow.log_params({"segment.train_canvases": len(data.x_train), "segment.val_canvases": len(data.x_val)})
        results, masks, metrics = {}, {}, {}
        for name, skips in (("unet", True), ("plain", False)):
            model = train_model(name, skips, settings, data, config.runtime.verbose, backup / name)
            masks[name] = model.predict(data.x_val.astype(np.float32), verbose=0).argmax(axis=-1)
            results[name] = measures.segmentation(data.y_val, masks[name], settings.num_classes)
            metrics.update({f"segment/{name}/val_miou": results[name]["miou"],
                            f"segment/{name}/val_pixel_accuracy": results[name]["pixel_accuracy"],
                            f"segment/{name}/params": model.count_params()})
            model.save(folder / f"{name}.keras")
            if skips:
                metrics.update(export_unet(model, settings, data, folder, masks[name]))
        workspace.write_text(folder / "per_class_iou.csv", per_class_table(data.class_names, results))
        prediction_grid(data, masks, folder / "predictions.png")
        for name in ("per_class_iou.csv", "predictions.png"):
            mlflow.log_artifact(str(folder / name))
        tracking.log_metrics(metrics)
        print(f"[segment] validation mIoU: U-Net {metrics['segment/unet/val_miou']:.3f}, without skips "
              f"{metrics['segment/plain/val_miou']:.3f}, U-Net int8 on LiteRT "
              f"{metrics['segment/unet_tflite_int8/miou']:.3f}")
        shutil.rmtree(backup, ignore_errors=True)  # finished: the next run starts afresh
        return metrics

    return stage.execute(config, "segment", SECTIONS, inputs, body, force)
