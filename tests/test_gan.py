"""The DCGAN stage: real `fit()` training on tiny data, samples logged, and resume after a kill."""

import re
import subprocess

import numpy as np
import pytest
import tf_keras as keras
from mlflow.tracking import MlflowClient

from pipelines.core import tracking, workspace
from pipelines.stages import clean, gan, split
from pipelines.training import generative
from tests.conftest import TINY, png, sigkill_after_first_checkpoint, stage_command, tiny_config

GAN = ["gan.epochs=3", "gan.sample_every=1", "gan.batch_size=32", "gan.latent_dim=8", "gan.base_filters=4"]


def test_networks_have_the_right_shapes():
    import models.gan as gan_models

    config = tiny_config(".", *GAN).gan
    generator = gan_models.build_generator(config, (8, 8, 1))
    discriminator = gan_models.build_discriminator(config, (8, 8, 1))
    images = generator(np.zeros((3, 8), np.float32)).numpy()
    assert images.shape == (3, 8, 8, 1) and np.abs(images).max() <= 1.0
    assert discriminator(images).shape == (3, 1)


@pytest.mark.slow
def test_killed_gan_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, capsys):
    config = tiny_config(tmp_path, *GAN)
    clean.run(config)
    split.run(config)
    real_grid = generative.sample_grid
    calls = []

    def killed_at_epoch_two(generator, noise, labels, path, title):
        calls.append(title)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_grid(generator, noise, labels, path, title)

    monkeypatch.setattr(generative, "sample_grid", killed_at_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        gan.run(config)
    folder = workspace.stage_dir(tmp_path, config.experiment, "gan")
    assert not folder.exists()  # nothing half-written
    monkeypatch.setattr(generative, "sample_grid", real_grid)

    result = gan.run(config)
    assert "resuming from checkpoint at epoch 2" in capsys.readouterr().out
    history = MlflowClient().get_metric_history(result.run_id, "gan/d_loss")
    assert [point.step for point in history] == [2]  # only the third epoch was trained again
    assert np.isfinite(result.metrics["gan/g_loss"])
    png(folder / "samples_epoch_003.png", (640, 320))
    assert keras.models.load_model(folder / "generator.keras")(np.zeros((2, 8), np.float32)).shape == (2, 8, 8, 1)
    metrics = result.metrics
    assert metrics["gan/fid_real_train_vs_val"] < metrics["gan/fid_untrained_generator"]  # the scale is sane
    assert np.isfinite(metrics["gan/fid"]) and metrics["gan/fid"] >= 0
    assert metrics["gan/export/int8/size_bytes"] < metrics["gan/export/float32/size_bytes"]
    assert metrics["gan/export/float32/max_abs_diff"] < 1e-4 and metrics["gan/export/int8/max_abs_diff"] < 0.5
    tracking.configure(config)
    artifacts = MlflowClient().list_artifacts(result.run_id, "samples")
    assert [item.path for item in artifacts] == ["samples/samples_epoch_003.png"]


@pytest.mark.slow
def test_conditional_gan_takes_labels_and_reports_label_accuracy(tmp_path):
    config = tiny_config(tmp_path, *GAN, "gan.conditional=true", "gan.epochs=2")
    clean.run(config)
    split.run(config)
    result = gan.run(config)
    assert 0.0 <= result.metrics["gan/conditional_label_accuracy"] <= 1.0
    png(result.folder / "generated_class_histogram.png", (540, 270))
    generator = keras.models.load_model(result.folder / "generator.keras")
    assert [tuple(tensor.shape) for tensor in generator.inputs] == [(None, 8), (None,)]


@pytest.mark.slow
def test_gan_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path):
    run = [*GAN, "gan.epochs=20", "gan.sample_every=5"]  # a checkpoint and a sample grid every 5 epochs
    settings = [*TINY, f"runtime.root={tmp_path}", *run]
    config = tiny_config(tmp_path, *run)
    clean.run(config)
    split.run(config)
    command = stage_command("gan", settings)
    backup_root = workspace.stage_dir(tmp_path, config.experiment, "gan").parent / ".backup"
    sigkill_after_first_checkpoint(command, backup_root)
    assert not workspace.stage_dir(tmp_path, config.experiment, "gan").exists()

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epoch = int(re.search(r"resuming from checkpoint at epoch (\d+)", resumed.stdout).group(1))
    assert 1 <= epoch < 20
    tracking.configure(config)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment).experiment_id
    latest = client.search_runs([experiment], "tags.stage = 'gan'", order_by=["attributes.start_time DESC"])[0]
    steps = [point.step for point in client.get_metric_history(latest.info.run_id, "gan/d_loss")]
    assert min(steps) == epoch and max(steps) == 19  # only the epochs after the checkpoint were trained
    assert latest.data.metrics["gan/fid"] < latest.data.metrics["gan/fid_untrained_generator"]  # 20 epochs learn


def test_gan_step_under_a_mirrored_strategy_moves_the_averaged_generator():
    from pipelines.core import config as config_module
    from pipelines.training import fitting

    settings = tiny_config(".", *GAN).gan
    strategy = fitting.strategy(config_module.RuntimeConfig(strategy="mirrored"))  # one replica on this CPU
    model = generative.build_model(settings, (8, 8, 1), strategy)
    before = [weight.numpy() for weight in model.average_generator.trainable_weights]
    real = np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)).astype(np.float32)
    losses = model.train_on_batch(real, np.zeros(32, np.int32), return_dict=True)
    assert set(losses) == {"d_loss", "g_loss"} and all(np.isfinite(value) for value in losses.values())
    after = [weight.numpy() for weight in model.average_generator.trainable_weights]
    assert any(np.abs(new - old).max() > 0 for new, old in zip(after, before))  # the moving average moved


def test_the_minibatch_std_feature_map_tells_a_collapsed_batch_from_a_varied_one():
    import models.gan as gan_models

    same = np.ones((8, 4, 4, 3), np.float32)
    varied = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype(np.float32)
    layer = gan_models.MinibatchStdDev()
    collapsed, spread = layer(same).numpy(), layer(varied).numpy()
    assert collapsed.shape == spread.shape == (8, 4, 4, 4)
    np.testing.assert_array_equal(collapsed[..., :3], same)  # the inputs pass through, one map is added
    assert collapsed[..., 3].max() < 1e-3 and spread[..., 3].min() > 0.5
    assert np.ptp(spread[..., 3]) == 0  # one value for the whole batch
    on = gan_models.build_discriminator(tiny_config(".", *GAN).gan, (8, 8, 1))
    off = gan_models.build_discriminator(tiny_config(".", *GAN, "gan.minibatch_std=false").gan, (8, 8, 1))
    assert "minibatch_std" in [item.name for item in on.layers]
    assert "minibatch_std" not in [item.name for item in off.layers]
    assert on.count_params() > off.count_params()  # the second block's kernel reads one more map


def test_auto_compile_times_xla_and_tf_function_and_keeps_the_faster():
    import tensorflow as tf

    from pipelines.core import config as config_module
    from pipelines.training import fitting

    strategy = fitting.strategy(config_module.RuntimeConfig())
    batch = (tf.constant(np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)).astype(np.float32)),
             tf.zeros(32, tf.int32))
    auto = tiny_config(".", *GAN).gan
    assert auto.jit_compile == "auto"
    xla, timings = generative.compiled_with_xla(auto, (8, 8, 1), strategy, 0, batch)
    assert set(timings) == {"xla", "graph"} and all(value > 0 for value in timings.values())
    assert xla == (timings["xla"] < timings["graph"])
    pinned = tiny_config(".", *GAN, "gan.jit_compile=true").gan
    assert generative.compiled_with_xla(pinned, (8, 8, 1), strategy, 0, batch) == (True, {})
    assert generative.build_model(pinned, (8, 8, 1), strategy)._jit_compile is True
    assert generative.build_model(auto, (8, 8, 1), strategy)._jit_compile is False  # unresolved: tf.function


def test_a_diverging_gan_stops_on_the_one_fit_path_naming_its_loss():
    import tensorflow as tf

    from pipelines.core import config as config_module
    from pipelines.training import fitting

    settings = tiny_config(".", *GAN, "gan.jit_compile=false").gan
    model = generative.build_model(settings, (8, 8, 1), fitting.strategy(config_module.RuntimeConfig()))
    real = np.full((64, 8, 8, 1), np.nan, np.float32)
    data = tf.data.Dataset.from_tensor_slices((real, np.zeros(64, np.int32))).batch(32, drop_remainder=True)
    with pytest.raises(fitting.TrainingDiverged, match=r"the loss d_loss became nan at epoch 1, batch 1 \(d learning "
                                                       r"rate 0\.0002, g learning rate 0\.0002\)"):
        fitting.guarded_fit(model, data, epochs=2, log=False)
