"""Operator preflight: layers mapped to TF-Lite operators before conversion, checked against the installed TFLite
Micro and a target's optimized kernels; the bundle's resolver registers exactly the flatbuffer's operators."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from deploy import bundle, micro, preflight, tflite
from deploy.edge.predict import LiteRTModel
from tests.conftest import TINY

layers = keras.layers
CORTEX_M4, ESP32_S3, RASPBERRY_PI = (micro.resolve(name) for name in ("cortex_m4", "esp32_s3", "raspberry_pi"))
IMAGES = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 1)).astype(np.float32)
WINDOWS = np.random.default_rng(0).normal(size=(16, 8, 3)).astype(np.float32)


def _functional(build, shape=(8, 8, 1)) -> keras.Model:
    inputs = keras.Input(shape, name="image")
    return keras.Model(inputs, build(inputs))


def _cnn(*first) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), *first,
                             layers.Conv2D(4, 3, padding="same", name="conv"), layers.BatchNormalization(name="bn"),
                             layers.ReLU(name="relu"), layers.MaxPooling2D(name="pool"),
                             layers.DepthwiseConv2D(3, padding="same", activation="relu", name="depthwise"),
                             layers.Flatten(name="flatten"), layers.Dense(3, activation="softmax", name="dense")])


def _gru() -> keras.Model:
    return keras.Sequential([keras.Input((8, 3)), layers.GRU(4, name="gru"), layers.Dense(2, activation="softmax")])


def _tile(inputs):
    return layers.Dense(2)(layers.Flatten()(tf.tile(inputs, [1, 2, 1, 1])))


def _all_ops(flatbuffer: bytes) -> set[str]:
    """Every operator of every subgraph, read with TFLM's own copy of the schema (not preflight's reader)."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    codes = [names[max(code.builtinCode, code.deprecatedBuiltinCode)] for code in model.operatorCodes]
    return {codes[op.opcodeIndex] for graph in model.subgraphs for op in graph.operators or []}


def test_a_plain_cnn_passes_with_exactly_the_operators_the_converter_makes():
    model = _cnn()
    checked = preflight.check(model, ["float32", "int8"], [CORTEX_M4, ESP32_S3, RASPBERRY_PI])
    by_layer = {entry["layer"]: entry["ops"] for entry in checked["layers"]}
    assert by_layer["bn"] == [] and by_layer["relu"] == []  # folded into the convolution, fused into it
    assert set(checked["ops"]) == {"CONV_2D", "MAX_POOL_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "FULLY_CONNECTED",
                                   "SOFTMAX"}
    assert checked["stop"] is None and checked["unsupported"] == [] and checked["unknown"] == []
    assert checked["reference_only"] == {"cortex_m4": [], "esp32_s3": []}  # every compute op is optimized
    for variant in ("float32", "int8"):
        converted = _all_ops(tflite.convert(model, variant, IMAGES))
        assert converted - {"QUANTIZE", "DEQUANTIZE"} == set(checked["ops"]), variant
    # A constant scale before a convolution is folded into its weights: the preflight's list is the layers'
    # operators before folding, so it may hold more than the flatbuffer, never less.
    scaled = _cnn(layers.Rescaling(1 / 255.0, name="scale"))
    checked = preflight.check(scaled, ["float32"], [CORTEX_M4])
    assert "MUL" in checked["ops"] and _all_ops(tflite.convert(scaled, "float32")) < set(checked["ops"])


def test_a_layer_tflm_lacks_stops_export_for_a_tflm_target_naming_layer_and_operator():
    model = _functional(_tile)
    checked = preflight.check(model, ["float32", "int8"], [CORTEX_M4, RASPBERRY_PI])
    assert "TILE" not in preflight.tflm_ops() and "TILE" in checked["ops"]
    assert checked["stop"] and "\n" not in checked["stop"]
    assert re.search(r"layer 'tf\.tile(_\d+)?' \(TFOpLambda, tf\.tile\) becomes TILE, which TFLite Micro does not "
                     "have", checked["stop"])
    assert "cortex_m4" in checked["stop"] and "raspberry_pi" not in checked["stop"]
    assert preflight.check(model, ["float32", "int8"], [RASPBERRY_PI])["stop"] is None  # LiteRT runs TILE


def test_the_tflm_operator_list_is_the_installed_interpreters():
    """What preflight reads from the installed tflite-micro holds when the interpreter runs a converted model."""
    ops = preflight.tflm_ops()
    assert {"CONV_2D", "FULLY_CONNECTED", "CUMSUM", "WHILE", "UNIDIRECTIONAL_SEQUENCE_LSTM"} <= ops
    assert not {"TILE", "GELU", "REDUCE_PROD"} & ops
    tiled = tflite.convert(_functional(_tile), "float32")
    with pytest.raises(micro.Unsupported, match="TILE"):
        micro.tflm_run(tiled, IMAGES[:1])
    summed = tflite.convert(_functional(lambda x: layers.Flatten()(tf.math.cumsum(x, axis=1))), "float32")
    outputs, arena = micro.tflm_run(summed, IMAGES[:2])  # CUMSUM runs: TFLM has a kernel for it
    assert np.allclose(outputs, LiteRTModel(summed).predict(IMAGES[:2]), rtol=1e-5) and arena > 0


def test_cumsum_runs_on_tflm_but_in_float_inside_int8_and_with_reference_kernels_on_cmsis_nn():
    model = _functional(lambda x: layers.Dense(2)(layers.Flatten()(tf.math.cumsum(x, axis=1))))
    checked = preflight.check(model, ["float32", "int8"], [CORTEX_M4])
    assert checked["stop"] is None
    layer = next(entry["layer"] for entry in checked["layers"] if entry["ops"] == ["CUMSUM"])
    assert re.fullmatch(r"tf\.math\.cumsum(_\d+)?", layer)  # Keras numbers the layers of a repeated op
    assert checked["reference_only"]["cortex_m4"] == [{"layer": layer, "op": "CUMSUM"}]
    assert f"layer '{layer}' (TFOpLambda, tf.math.cumsum) becomes CUMSUM, which has no int8 kernel: the int8 " \
           "variants run it in float between DEQUANTIZE and QUANTIZE" in checked["warnings"]
    assert f"cortex_m4 (cmsis-nn): reference kernels only for CUMSUM (layer '{layer}')" in checked["warnings"]


def test_an_int8_gru_stops_export_before_conversion_naming_the_layer():
    """Its int8 calibration crashes the converter with a segmentation fault (models/sequence.py): the preflight
    is the only place to stop it with a message."""
    checked = preflight.check(_gru(), ["float32", "int8", "qat_int8"], [CORTEX_M4])
    assert checked["stop"].startswith("export preflight: layer 'gru' (GRU, a WHILE loop and its body) becomes WHILE")
    assert "leave int8, qat_int8 out of export.variants" in checked["stop"] and "\n" not in checked["stop"]
    assert preflight.check(_gru(), ["float32"], [CORTEX_M4])["stop"] is None  # float: TFLM has WHILE


def test_reference_only_operators_are_named_per_kernel_library():
    def build(x):
        x = layers.Conv2D(4, 3, name="conv")(x)
        x = layers.LeakyReLU(0.1, name="leaky")(x)
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        return layers.Dense(3, activation="sigmoid", name="head")(x)

    profile = micro.resolve({"name": "my_board", "ram_bytes": 1 << 20, "flash_bytes": 1 << 21, "runtime": "tflm"})
    checked = preflight.check(_functional(build), ["int8"], [CORTEX_M4, ESP32_S3, profile, RASPBERRY_PI])
    slow = {name: [(item["layer"], item["op"]) for item in items] for name, items in checked["reference_only"].items()}
    assert slow == {"cortex_m4": [("leaky", "LEAKY_RELU"), ("pool", "MEAN"), ("head", "LOGISTIC")],
                    "esp32_s3": [("leaky", "LEAKY_RELU"), ("pool", "MEAN"), ("head", "LOGISTIC")]}
    assert checked["stop"] is None and preflight.kernel_library(RASPBERRY_PI) is None
    assert preflight.kernel_library(profile) in ("tflm-reference", None)  # reference kernels: nothing faster


def test_nested_models_and_unknown_layers_are_walked_and_reported_not_guessed():
    inner = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu", name="conv")],
                             name="backbone")
    inputs = keras.Input((8, 8, 1))
    x = layers.Lambda(lambda t: t * 2.0, name="custom")(inner(inputs))
    checked = preflight.check(keras.Model(inputs, x), ["int8"], [CORTEX_M4])
    by_layer = {entry["layer"]: entry["ops"] for entry in checked["layers"]}
    assert by_layer["backbone/conv"] == ["CONV_2D"] and by_layer["custom"] == ["?"]
    assert checked["unknown"] == ["custom"] and checked["stop"] is None
    assert any("layer 'custom' (Lambda, Lambda is not in the table)" in line for line in checked["warnings"])


def test_the_bundle_header_registers_exactly_the_flatbuffers_operators(tmp_path):
    """A GRU's WHILE body holds operators the main graph does not: the resolver needs them all."""
    flatbuffer = tflite.convert(_gru(), "float32")
    expected = _all_ops(flatbuffer)
    assert set(micro.ops(flatbuffer)) < expected  # the main graph alone misses LOGISTIC, TANH, ...
    bundle.write(tmp_path, flatbuffer, ["a", "b"], {}, "tflm", arena_bytes=4096)
    header = (tmp_path / "model_data.h").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", header)
    assert sorted(registered) == sorted(micro.resolver_call(op)[:-2] for op in expected)
    assert f"kOpCount = {len(expected)};" in header
    assert (tmp_path / "ops.txt").read_text().split() == preflight.flatbuffer_ops(flatbuffer)
    assert micro.tflm_run(flatbuffer, WINDOWS[:1])[1] > 0  # and TFLM runs the float loop
    # MicroMutableOpResolver's own spelling (tensorflow/lite/micro/micro_mutable_op_resolver.h)
    assert micro.resolver_call("UNIDIRECTIONAL_SEQUENCE_LSTM") == "AddUnidirectionalSequenceLSTM()"
    assert micro.resolver_call("CUMSUM") == "AddCumSum()" and micro.resolver_call("CONV_2D") == "AddConv2D()"


def test_the_export_stage_stops_before_conversion_with_one_line(tmp_path, monkeypatch, capsys):
    """Through the CLI: a champion with a layer TFLM lacks gets one line naming it, and no variant is converted."""
    from pipelines import __main__ as cli
    from pipelines.core import tracking, workspace

    settings = [*TINY, f"runtime.root={tmp_path}", "export.targets=[cortex_m4]"]
    arguments = [argument for setting in settings for argument in ("--set", setting)]
    for name in ("clean", "split"):
        assert cli.main([name, *arguments]) == 0
    # the champion: a model with tf.tile (training one through the pipeline would take a minute for nothing)
    monkeypatch.setattr(tracking, "champion_version",  # version 1, and no board has a champion of its own
                        lambda config, alias="champion": "1" if alias == "champion" else None)
    monkeypatch.setattr(tracking, "load_champion", lambda config, version=None: _functional(_tile))
    converted = []
    monkeypatch.setattr(tflite, "convert", lambda *args, **kwargs: converted.append(args))
    capsys.readouterr()
    assert cli.main(["export", *arguments]) != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "preflight" in line]
    assert len(lines) == 1 and re.match(r"error: export preflight: layer 'tf\.tile(_\d+)?' \(TFOpLambda, tf\.tile\) "
                                        "becomes TILE", lines[0])
    assert converted == [] and not list(workspace.stage_dir(tmp_path, "digits", "export").glob("*.tflite"))
