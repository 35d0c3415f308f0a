"""Will it fit? Device targets, TFLite Micro runs, the cost counted from the flatbuffer, the C array."""

import numpy as np
import pytest
import tf_keras as keras

from deploy import micro, tflite
from pipelines.core import config as config_module
from pipelines.core.config import ConfigError
from tests.conftest import parse_c_array


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)),
                              keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                              keras.layers.DepthwiseConv2D(3, padding="valid"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    # Nonzero biases, as after training (the converter shares or drops all-zero constant tensors).
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.1, weight.shape).astype(np.float32) for weight in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def flatbuffers():
    model = _model()
    images = np.random.default_rng(0).uniform(0, 255, (32, 8, 8, 1)).astype(np.float32)
    return model, images, {variant: tflite.convert(model, variant, images)
                           for variant in ("float32", "int8", "float16")}


def test_cost_counts_the_macs_and_parameters_of_the_layers(flatbuffers):
    model, _, converted = flatbuffers
    for variant in ("float32", "int8"):
        cost = micro.cost(converted[variant])
        by_op = {layer["op"]: layer["macs"] for layer in cost["layers"] if layer["macs"]}
        assert by_op == {"CONV_2D": 8 * 8 * 4 * 3 * 3 * 1, "DEPTHWISE_CONV_2D": 6 * 6 * 4 * 3 * 3,
                         "FULLY_CONNECTED": 3 * 4}, variant
        assert cost["macs"] == sum(by_op.values())
        assert cost["params"] == model.count_params(), variant  # the flatbuffer's weights are the model's


def test_tflm_runs_an_int8_model_like_litert_and_reports_its_arena(flatbuffers):
    from deploy.edge.predict import LiteRTModel

    _, images, converted = flatbuffers
    litert = LiteRTModel(converted["int8"])
    tensors = np.stack([litert.quantize(image)[0] for image in images])
    outputs, arena = micro.tflm_run(converted["int8"], tensors)
    reference = np.stack([litert.run(tensor[None])[0] for tensor in tensors])
    assert outputs.shape == reference.shape and outputs.dtype == np.int8
    assert np.abs(outputs.astype(int) - reference).max() <= 2  # the same reference arithmetic, nearly exact
    assert 1000 < arena < 64 * 1024


def test_a_variant_tflm_cannot_run_is_reported_with_its_operator(flatbuffers):
    _, images, converted = flatbuffers
    with pytest.raises(micro.Unsupported, match="DEQUANTIZE") as caught:  # float16 weights: TFLM has no kernel
        micro.tflm_run(converted["float16"], images[:2])
    assert caught.value.ops == ["DEQUANTIZE"]


def test_the_c_array_holds_the_flatbuffer_byte_for_byte(flatbuffers):
    _, _, converted = flatbuffers
    flatbuffer = converted["int8"]
    ops = micro.ops(flatbuffer)
    source, header = micro.c_array(flatbuffer, 12345, ops, ["a", 'b"c'], (0.5, -3))
    assert parse_c_array(source) == flatbuffer
    assert "alignas(16) const unsigned char g_model_data[]" in source
    assert f"g_model_data_len = {len(flatbuffer)};" in source
    assert "kTensorArenaSize = 12345;" in header and "kInputZeroPoint = -3;" in header
    assert f"kOpCount = {len(ops)};" in header and "resolver.AddConv2D()" in header
    assert "resolver.AddDepthwiseConv2D()" in header and "resolver.AddFullyConnected()" in header
    assert micro.resolver_call("MAX_POOL_2D") == "AddMaxPool2D()"


def test_fit_says_by_how_much_and_targets_fail_at_load():
    target = micro.resolve("cortex_m4")
    cell = micro.fit(target, 2_000_000, 10_000)
    assert not cell["fits"] and cell["flash_margin_bytes"] == target.flash_bytes - 2_000_000 - \
        micro.RUNTIME_FLASH["tflm"]
    assert micro.fit(target, 100_000, 10_000)["fits"]
    custom = {"name": "m0", "ram_bytes": 32768, "flash_bytes": 262144, "runtime": "tflm", "cores": 1}
    assert micro.resolve(custom).ram_bytes == 32768
    for bad, message in (({**custom, "ram": 1}, "unknown key 'ram'"), ({**custom, "flash_bytes": 0}, "flash_bytes"),
                         ({**custom, "runtime": "arduino"}, "runtime"), ("cortex_m9", "unknown target")):
        with pytest.raises(ConfigError, match=message):
            config_module.load(None, [f"export.targets=[{bad!r}]".replace("'", "") if isinstance(bad, str)
                                      else "export.targets=" + str([bad]).replace("'", "")])
