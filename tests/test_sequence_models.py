"""Sequence models: they build edge-sized, train a few steps on sensor windows (BasicMotions when aeon's data
files are installed, else synthetic sines), and the CNN and LSTM convert to full int8 and agree with Keras on
LiteRT."""

import importlib.util
import types

import numpy as np
import pytest
import tf_keras as keras

import models
from deploy import micro, tflite
from deploy.edge.predict import LiteRTModel
from models import sequence
from pipelines.core import config as config_module
from pipelines.data import signals

LENGTH = 64
SETTINGS = types.SimpleNamespace(filters=(8, 16), kernel_sizes=(5,), pool_size=2, units=8, dense_units=16,
                                 batch_norm=False, initializer="he_normal", dropout_rate=0.1, l1=0.0, l2=0.0)


def _sines() -> signals.Recordings:
    """40 recordings of 6 noisy sine channels at 10 Hz; the class is the frequency."""
    rng = np.random.default_rng(0)
    time = np.arange(100) / 10.0
    labels = np.arange(40) % 4
    waves = [np.stack([np.sin(2 * np.pi * (0.3 + 0.4 * label) * time + rng.uniform(0, 6)) * (1 + channel)
                       for channel in range(6)], axis=1) + rng.normal(0, 0.2, (100, 6)) for label in labels]
    return signals.Recordings([wave.astype(np.float32) for wave in waves], tuple(f"sine-{i}" for i in range(40)),
                              tuple(f"c{i}" for i in range(6)), 10.0, "synthetic sines", labels=labels,
                              class_names=("0.3 Hz", "0.7 Hz", "1.1 Hz", "1.5 Hz"))


@pytest.fixture(scope="module")
def data():
    """Train and val windows split by recording, and the per-channel normalizer of the training windows."""
    recordings = signals.load_embedded("basic_motions") if importlib.util.find_spec("aeon") else _sines()
    cut = signals.windows(recordings, LENGTH, 18)
    parts = signals.grouped_split(cut.recording, cut.label, 0.2, 0.2, seed=0)
    train = cut.x[parts["train"]]
    normalizer = {"mean": train.mean(axis=(0, 1)).tolist(), "variance": train.var(axis=(0, 1)).tolist()}
    return types.SimpleNamespace(x=train, y=cut.label[parts["train"]], x_val=cut.x[parts["val"]],
                                 normalizer=normalizer, origin=recordings.origin)


def _fit(model, x, y, epochs):
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    return model.fit(x, y, batch_size=32, epochs=epochs, verbose=0).history["loss"]


def _default_model_settings():
    """The `model` section a sensor config gets when it names only `architecture: cnn1d`."""
    return config_module.from_dict({"data": {"source": "basic_motions"},
                                    "model": {"architecture": "cnn1d"}}).model


def test_cnn1d_trains_on_the_fcn_schedule_unless_the_config_says_otherwise():
    """cnn1d's own train and search defaults (the published FCN recipe, scaled down) fill only the keys a config
    leaves out; other architectures keep the global defaults."""
    fcn = config_module.from_dict({"data": {"source": "basic_motions"}, "model": {"architecture": "cnn1d"}})
    assert (fcn.train.epochs, fcn.train.patience, fcn.train.reduce_lr_patience, fcn.train.min_learning_rate,
            fcn.train.monitor, fcn.search.epochs) == (300, 60, 20, 1e-4, "train", 300)
    given = config_module.from_dict({"data": {"source": "basic_motions"}, "model": {"architecture": "cnn1d"},
                                     "train": {"epochs": 7}}, ["train.reduce_lr_patience=0"])
    assert (given.train.epochs, given.train.patience, given.train.reduce_lr_patience) == (7, 60, 0)
    lstm = config_module.from_dict({"data": {"source": "basic_motions"}, "model": {"architecture": "recurrent"}})
    assert (lstm.train.epochs, lstm.train.reduce_lr_patience, lstm.train.monitor, lstm.search.epochs) == \
        (60, 0, "val", 40)
    # a saved config (every key written) loads back as itself
    assert config_module.from_dict(config_module.to_dict(given)) == given
    # a learning rate at the default floor is refused with the floor's origin named
    with pytest.raises(config_module.ConfigError, match="cnn1d's default floor"):
        config_module.from_dict({"data": {"source": "basic_motions"}, "model": {"architecture": "cnn1d"},
                                 "train": {"learning_rate": 1e-4}})


def test_the_default_cnn_is_a_fully_convolutional_network_of_configurable_depth_width_and_kernels(data):
    defaults = _default_model_settings()
    assert (defaults.filters, defaults.kernel_sizes, defaults.batch_norm) == ((128, 256, 128), (8, 5, 3), True)
    model = sequence.build_cnn1d(defaults, (100, 6), 4, data.normalizer)
    assert model.layers[1].name == "normalize"  # raw sensor values in; the model normalizes them
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
    assert [(layer.filters, layer.kernel_size[0]) for layer in convolutions] == [(128, 8), (256, 5), (128, 3)]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 3
    assert not any(isinstance(layer, keras.layers.MaxPooling1D) for layer in model.layers)
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [4]  # head only
    scores = model.predict(np.zeros((2, 100, 6), np.float32), verbose=0)
    assert scores.shape == (2, 4) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    # depth, width and kernels are config fields: two blocks of 16 and 32, kernels 7 then 7 (the last repeats)
    small = config_module.from_dict({"data": {"source": "basic_motions"}, "model": {
        "architecture": "cnn1d", "filters": [16, 32], "kernel_sizes": [7], "pool_size": 2}}).model
    model = sequence.build_cnn1d(small, (100, 6), 4, data.normalizer)
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
    assert [(layer.filters, layer.kernel_size[0]) for layer in convolutions] == [(16, 7), (32, 7)]
    assert model.get_layer("pool1").pool_size == (2,) and model.count_params() < 10_000
    # other architectures keep their own defaults
    assert config_module.from_dict({}).model.filters == (32, 64)


def test_the_recurrent_units_are_a_config_field(data):
    settings = config_module.from_dict({"data": {"source": "basic_motions"},
                                        "model": {"architecture": "recurrent", "units": 12}}).model
    model = models.architectures()["recurrent"](settings, (LENGTH, 6), 4, data.normalizer)
    assert model.get_layer("lstm").units == 12


def test_the_default_cnn_runs_in_int8_on_tflite_micro_within_the_cortex_m4_arena(data):
    """The default cnn1d, converted to full int8, runs on the TFLM interpreter like LiteRT, and its arena and
    flatbuffer fit the cortex_m4 preset at a 128-sample window of 6 channels."""
    model = sequence.build_cnn1d(_default_model_settings(), (128, 6), 4, data.normalizer)
    keras.utils.set_random_seed(0)
    x = np.concatenate([data.x, data.x_val])[:, :LENGTH]
    x = np.concatenate([x, x], axis=1)  # 128 samples
    flatbuffer = tflite.convert(model, "int8", x[:32])
    lite = LiteRTModel(flatbuffer)
    tensors = np.stack([lite.quantize(window)[0] for window in x[:3]])
    on_device, arena = micro.tflm_run(flatbuffer, tensors)
    reference = np.stack([lite.run(tensor[None])[0] for tensor in tensors])
    assert np.abs(on_device.astype(int) - reference.astype(int)).max() <= 2
    verdict = micro.fit(micro.PRESETS["cortex_m4"], len(flatbuffer), arena)
    assert verdict["fits"], verdict


@pytest.mark.parametrize("build", [
    lambda normalizer: sequence.build_cnn1d(SETTINGS, (LENGTH, 6), 4, normalizer),
    lambda normalizer: sequence.build_recurrent(SETTINGS, (LENGTH, 6), 4, normalizer, cell="lstm", units=8),
    lambda normalizer: sequence.build_recurrent(SETTINGS, (LENGTH, 6), 4, normalizer, cell="gru", units=8),
], ids=["cnn1d", "lstm", "gru"])
def test_the_classifiers_train_a_few_steps(data, build):
    losses = _fit(build(data.normalizer), data.x, data.y, epochs=4)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_the_autoencoder_learns_to_reconstruct_the_normalized_window(data):
    autoencoder = sequence.build_conv_autoencoder1d(SETTINGS, (LENGTH, 6), 0, data.normalizer)
    target = autoencoder.get_layer("normalize")(data.x).numpy()
    assert autoencoder.output_shape == (None, LENGTH, 6)
    keras.utils.set_random_seed(0)
    autoencoder.compile(keras.optimizers.Adam(0.01), "mse")
    losses = autoencoder.fit(data.x, target, batch_size=32, epochs=4, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="window length 50 must be a multiple of 4"):
        sequence.build_conv_autoencoder1d(SETTINGS, (50, 6), 0, data.normalizer)


def _agreement(model, flatbuffer, x) -> float:
    litert = LiteRTModel(flatbuffer)
    assert litert.input["dtype"] == np.int8 and litert.output["dtype"] == np.int8
    return float((litert.predict(x).argmax(axis=1) == model.predict(x, verbose=0).argmax(axis=1)).mean())


def test_the_cnn_converts_to_int8_and_agrees_with_keras_on_litert(data):
    model = sequence.build_cnn1d(SETTINGS, (LENGTH, 6), 4, data.normalizer)
    _fit(model, data.x, data.y, epochs=8)
    flatbuffer = tflite.convert(model, "int8", data.x[:64])
    assert "CONV_2D" in micro.ops(flatbuffer)  # Conv1D runs as EXPAND_DIMS + CONV_2D
    assert _agreement(model, flatbuffer, data.x_val) >= 0.9


@pytest.mark.slow
def test_an_lstm_with_a_fixed_batch_converts_to_one_fused_int8_operator(data):
    model = sequence.build_recurrent(SETTINGS, (LENGTH, 6), 4, data.normalizer, cell="lstm", units=8)
    _fit(model, data.x, data.y, epochs=4)
    flatbuffer = tflite.convert(sequence.fixed_batch(model), "int8", data.x[:64])
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in micro.ops(flatbuffer) and "WHILE" not in micro.ops(flatbuffer)
    assert _agreement(model, flatbuffer, data.x_val) >= 0.9


@pytest.mark.slow
def test_a_converted_lstm_scores_every_window_on_its_own_on_litert_and_tflm(data, tmp_path):
    """The fused LSTM keeps its state in variable tensors; each window must start from zero, as in Keras."""
    model = sequence.build_recurrent(SETTINGS, (LENGTH, 6), 4, data.normalizer, cell="lstm", units=32)
    _fit(model, data.x, data.y, epochs=2)
    model.save(tmp_path / "lstm.keras")  # converted as export converts the registered champion: loaded back
    model = keras.models.load_model(tmp_path / "lstm.keras")
    windows = data.x_val[:24]
    expected = model.predict(windows, verbose=0)
    lite = LiteRTModel(tflite.convert(model, "float32"))  # convert takes the batch-1 copy itself
    assert np.abs(lite.predict(windows) - expected).max() < 1e-4  # window 24 as window 1: no carried state
    again = lite.predict(windows[::-1])[::-1]
    assert np.abs(again - expected).max() < 1e-4  # the order does not matter
    int8 = tflite.convert(model, "int8", data.x[:64])
    quantized = LiteRTModel(int8)
    tensors = np.stack([quantized.quantize(window)[0] for window in windows])
    on_device, arena = micro.tflm_run(int8, tensors)
    reference = np.stack([quantized.run(tensor[None])[0] for tensor in tensors])
    steps = np.abs(on_device.astype(int) - reference.astype(int))  # TFLM's LSTM kernel rounds on its own
    assert arena > 0 and steps.max() <= 3 and (steps == 0).mean() > 0.8
    assert (on_device.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.9


def test_the_autoencoder_computes_the_same_reconstruction_on_tflite_micro_as_on_litert(data):
    """A transposed convolution converted with an open batch gets its output shape computed at run time, which
    TFLite Micro does not do (its output came out 1x1): convert takes a batch-1 copy, so the shape is a
    constant and the device reconstructs every sample."""
    model = sequence.build_conv_autoencoder1d(SETTINGS, (LENGTH, 6), 0, data.normalizer)
    windows = data.x_val[:4]
    for variant in ("float32", "int8"):
        flatbuffer = tflite.convert(model, variant, data.x[:64])
        assert "SHAPE" not in micro.ops(flatbuffer)
        lite = LiteRTModel(flatbuffer)
        tensors = np.stack([lite.quantize(window)[0] for window in windows])
        reference = np.stack([lite.run(tensor[None])[0] for tensor in tensors])
        on_device, arena = micro.tflm_run(flatbuffer, tensors)
        assert on_device.shape == reference.shape == (4, LENGTH, 6) and arena > 0
        steps = np.abs(on_device.astype(np.float64) - reference)
        if variant == "float32":
            assert steps.max() < 1e-4
        else:  # TFLM's reference kernels round on their own: a step or two, most outputs exact
            assert steps.max() <= 2 and (steps == 0).mean() > 0.8
