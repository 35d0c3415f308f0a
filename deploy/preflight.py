"""Operator preflight: which TF-Lite builtin operators each Keras layer becomes, checked against TensorFlow Lite
for Microcontrollers and a target's optimized kernels before any conversion time is spent.

- The table below maps a layer class (with its activation and options) to the builtin operators the TF-Lite
  converter makes of it (measured with TF 2.21; `tests/test_preflight.py` converts the layers and compares).
  A layer the table does not know is reported as unknown, never assumed to be fine. The operators are those
  before the converter folds constants (a Rescaling before a convolution goes into its weights), so the list
  may hold more than the flatbuffer, not less; the bundle registers the flatbuffer's own (`flatbuffer_ops`).
- TFLM's operators are those the installed `tflite-micro` interpreter registers (read from its library).
- The optimized kernels of a kernel library (CMSIS-NN, ESP-NN) are listed with their sources; any other
  operator runs TFLM's reference kernel on such a target, and the preflight says so.
- A layer whose operator TFLM lacks stops export for a TFLM target; a layer that cannot be converted to int8
  stops it when an int8 variant is asked for. Both are one line naming the layer and the operator.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

# What the interpreter of the installed tflite-micro registers (python/tflite_micro/python_ops_resolver.cc,
# `PythonOpsResolver`, one AddXxx() per operator) is read from its library, `_runtime.so`, whose symbol table
# names each kernel's `Register_<OPERATOR>` function; this list is the fallback where the file cannot be read
# (tflite-micro's python_ops_resolver.cc, 2026).
TFLM_FALLBACK = frozenset("""
ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND BROADCAST_ARGS
BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE
DETECTION_POSTPROCESS DIV ELU EQUAL EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER
GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG
LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX MAX_POOL_2D MAXIMUM MEAN MINIMUM MIRROR_PAD MUL NEG
NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE READ_VARIABLE REDUCE_MAX RELU RELU6 RESHAPE RESIZE_BILINEAR
RESIZE_NEAREST_NEIGHBOR ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT
SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV
UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE""".split())

# Operators with optimized int8 kernels, per kernel library; TFLM runs every other operator (and every float
# operator) with its reference kernel there.
# - cmsis-nn: the kernels in tensorflow/tflite-micro tensorflow/lite/micro/kernels/cmsis_nn/ (add.cc,
#   batch_matmul.cc, conv.cc, depthwise_conv.cc, fully_connected.cc, maximum_minimum.cc, mul.cc, pad.cc (PAD and
#   PADV2), pooling.cc, softmax.cc, svdf.cc, transpose.cc, transpose_conv.cc, unidirectional_sequence_lstm.cc).
# - esp-nn: the kernels in espressif/esp-tflite-micro tensorflow/lite/micro/kernels/esp_nn/ (add.cc, conv.cc,
#   depthwise_conv.cc, fully_connected.cc, mul.cc, pooling.cc, softmax.cc).
OPTIMIZED = {
    "cmsis-nn": frozenset("""ADD BATCH_MATMUL CONV_2D DEPTHWISE_CONV_2D FULLY_CONNECTED MAXIMUM MINIMUM MUL PAD PADV2
                          AVERAGE_POOL_2D MAX_POOL_2D SOFTMAX SVDF TRANSPOSE TRANSPOSE_CONV
                          UNIDIRECTIONAL_SEQUENCE_LSTM""".split()),
    "esp-nn": frozenset("ADD CONV_2D DEPTHWISE_CONV_2D FULLY_CONNECTED MUL AVERAGE_POOL_2D MAX_POOL_2D "
                        "SOFTMAX".split()),
}
# The kernel library of the shipped TFLM presets, for a Target without a `kernels` field.
PRESET_LIBRARY = {"cortex_m4": "cmsis-nn", "cortex_m7": "cmsis-nn", "esp32_s3": "esp-nn"}
# Operators that only move or relabel memory: a reference kernel costs them nothing worth a warning.
NO_COMPUTE = frozenset("RESHAPE SQUEEZE EXPAND_DIMS SHAPE".split())

# Operators that cannot be part of an int8 model, and why.
INT8_BLOCKED = {
    "WHILE": "the converter cannot quantize a recurrent loop to int8 (its calibration crashes the process with a "
             "segmentation fault in TF 2.21, tensorflow/tensorflow#75140)",
}
# Operators LiteRT has no int8 kernel for: in an int8 model the converter keeps them in float between a
# DEQUANTIZE and a QUANTIZE (measured: tf.math.cumsum).
FLOAT_IN_INT8 = frozenset({"CUMSUM"})

# Keras activations -> the operators they add after the layer's own ("fused" ones become an option of it).
FUSED = ("linear", "relu", "relu6")
ACTIVATIONS = {
    "sigmoid": ("LOGISTIC",), "tanh": ("TANH",), "softmax": ("SOFTMAX",), "log_softmax": ("LOG_SOFTMAX",),
    "swish": ("LOGISTIC", "MUL"), "silu": ("LOGISTIC", "MUL"), "gelu": ("GELU",), "elu": ("ELU",),
    "exponential": ("EXP",), "leaky_relu": ("LEAKY_RELU",), "hard_silu": ("HARD_SWISH",),
}

# Layer class -> its own operators (activations are added from the layer's `activation`).
LAYERS = {
    "InputLayer": (), "Dropout": (), "SpatialDropout1D": (), "SpatialDropout2D": (), "GaussianNoise": (),
    "GaussianDropout": (), "AlphaDropout": (), "ActivityRegularization": (),
    "Dense": ("FULLY_CONNECTED",), "Conv2D": ("CONV_2D",), "DepthwiseConv2D": ("DEPTHWISE_CONV_2D",),
    "SeparableConv2D": ("DEPTHWISE_CONV_2D", "CONV_2D"), "Conv1D": ("EXPAND_DIMS", "CONV_2D", "RESHAPE"),
    "Conv2DTranspose": ("TRANSPOSE_CONV",), "Conv1DTranspose": ("RESHAPE", "TRANSPOSE_CONV"),
    "MaxPooling2D": ("MAX_POOL_2D",), "AveragePooling2D": ("AVERAGE_POOL_2D",),
    "MaxPooling1D": ("EXPAND_DIMS", "MAX_POOL_2D", "RESHAPE"),
    "AveragePooling1D": ("EXPAND_DIMS", "AVERAGE_POOL_2D", "RESHAPE"),
    "GlobalAveragePooling2D": ("MEAN",), "GlobalAveragePooling1D": ("MEAN",),
    "GlobalMaxPooling2D": ("REDUCE_MAX",), "GlobalMaxPooling1D": ("REDUCE_MAX",),
    "Flatten": ("RESHAPE",), "Reshape": ("RESHAPE",), "Permute": ("TRANSPOSE",),
    "Add": ("ADD",), "Subtract": ("SUB",), "Multiply": ("MUL",), "Maximum": ("MAXIMUM",), "Minimum": ("MINIMUM",),
    "Average": ("ADD", "MUL"), "Concatenate": ("CONCATENATION",),
    "Softmax": ("SOFTMAX",), "LeakyReLU": ("LEAKY_RELU",), "PReLU": ("PRELU",), "ELU": ("ELU",),
    "ZeroPadding2D": ("PAD",), "ZeroPadding1D": ("PAD",), "Embedding": ("GATHER",),
    "Normalization": ("SUB", "MUL"),
}
# Recurrent layers (converted with a fixed batch, deploy/tflite.py), by class and whether they are unrolled: the
# LSTM becomes one fused operator, a GRU's loop a WHILE whose body holds the cell's operators; STRIDED_SLICE
# takes the last step where the layer does not return sequences.
RECURRENT = {
    ("LSTM", False): ("UNIDIRECTIONAL_SEQUENCE_LSTM",),
    ("GRU", False): ("RESHAPE", "WHILE", "LESS", "ADD", "FULLY_CONNECTED", "SPLIT", "GATHER", "LOGISTIC", "MUL",
                     "SUB", "TANH"),
    ("LSTM", True): ("UNPACK", "FULLY_CONNECTED", "ADD", "SPLIT", "LOGISTIC", "TANH", "MUL"),
    ("GRU", True): ("UNPACK", "FULLY_CONNECTED", "ADD", "SPLIT", "SPLIT_V", "LOGISTIC", "MUL", "SUB", "TANH"),
}
# A Dense layer on an input of rank 3 or more with an open batch: the converter computes the flattened shape at
# run time around FULLY_CONNECTED (measured on a 4-D input).
DENSE_RANK_N = ("SHAPE", "GATHER", "REDUCE_PROD", "PACK", "CONCATENATION", "RESHAPE", "FULLY_CONNECTED")
# A Reshape layer with an open batch: the target shape is packed at run time from the input's batch.
RESHAPE_OPEN_BATCH = ("SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE")
# Layers with weights a constant scale before them can be folded into (measured: Normalization before a
# convolution, a Dense or an LSTM).
WEIGHTED_LAYERS = {"Conv2D", "Conv1D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "LSTM", "GRU"}
# Operators whose builtin options hold a fused ReLU: a ReLU layer right after them disappears into them.
# (measured: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD and MAX_POOL_2D do; CONCATENATION does not)
FUSES_RELU = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MAX_POOL_2D"}
# TFOpLambda layers (`tf.math.cumsum(x)` on a Keras tensor) by the TensorFlow symbol they call.
TF_OPS = {
    "math.cumsum": ("CUMSUM",), "cumsum": ("CUMSUM",), "tile": ("TILE",), "__operators__.add": ("ADD",),
    "math.add": ("ADD",), "math.subtract": ("SUB",), "math.multiply": ("MUL",), "math.truediv": ("DIV",),
    "math.divide": ("DIV",), "math.reduce_mean": ("MEAN",), "reduce_mean": ("MEAN",), "math.reduce_sum": ("SUM",),
    "reduce_sum": ("SUM",), "math.reduce_max": ("REDUCE_MAX",), "reduce_max": ("REDUCE_MAX",),
    "math.reduce_min": ("REDUCE_MIN",), "math.reduce_prod": ("REDUCE_PROD",), "math.sigmoid": ("LOGISTIC",),
    "math.tanh": ("TANH",), "nn.relu": ("RELU",), "nn.relu6": ("RELU6",), "nn.softmax": ("SOFTMAX",),
    "nn.gelu": ("GELU",), "math.exp": ("EXP",), "math.log": ("LOG",), "math.sqrt": ("SQRT",),
    "math.rsqrt": ("RSQRT",), "math.square": ("SQUARE",), "math.abs": ("ABS",), "math.pow": ("POW",),
    "math.maximum": ("MAXIMUM",), "math.minimum": ("MINIMUM",), "math.sin": ("SIN",), "math.cos": ("COS",),
    "math.sign": ("SIGN",), "math.top_k": ("TOPK_V2",), "one_hot": ("ONE_HOT",), "reshape": ("RESHAPE",),
    "transpose": ("TRANSPOSE",), "concat": ("CONCATENATION",), "expand_dims": ("EXPAND_DIMS",),
    "stack": ("PACK",), "gather": ("GATHER",), "__operators__.getitem": ("STRIDED_SLICE",),
}


@functools.cache
def tflm_ops() -> frozenset[str]:
    """The builtin operators the installed TFLM interpreter registers: the `Register_<OPERATOR>` kernels linked
    into its library that name a TF-Lite builtin operator (the fallback list where the library cannot be read)."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema
        from tflite_micro.python.tflite_micro import runtime

        library = next(Path(runtime.__file__).parent.glob("_runtime*.so")).read_bytes()
    except (ImportError, StopIteration, OSError):
        return TFLM_FALLBACK
    builtins = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    found = {name.decode() for name in re.findall(rb"Register_([A-Z0-9_]+?)Ev", library)}
    return frozenset(found & builtins) or TFLM_FALLBACK


def kernel_library(target) -> str | None:
    """A TFLM target's kernel library (`tflm-reference`, `cmsis-nn`, `esp-nn`): its `kernels` field, else the
    preset's; None for a target that does not run TFLM."""
    if getattr(target, "runtime", None) != "tflm":
        return None
    return getattr(target, "kernels", "") or PRESET_LIBRARY.get(target.name)


def _inbound(layer) -> list:
    """The layers that feed `layer` in its first call (a functional graph's node)."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    inbound = getattr(nodes[0], "inbound_layers", []) if nodes else []
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _activation(layer) -> tuple[tuple[str, ...], bool] | None:
    """(operators, fused) of a layer's `activation`, None when the table does not know it."""
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", str(activation)) if activation is not None else "linear"
    if name in FUSED:
        return (), name != "linear"
    return (ACTIVATIONS[name], False) if name in ACTIVATIONS else None


def layer_ops(layer, previous: dict | None = None, open_batch: bool = True) -> tuple[tuple[str, ...], str]:
    """(operators, note) one layer becomes; ("?",) when the table does not know it. `previous`: the entry of the
    layer that feeds it (a BatchNormalization after a plain convolution is folded into it, a ReLU after an
    operator with a fused-activation option becomes that option). `open_batch`: the model is converted with an
    open batch dimension (deploy/tflite.py converts a batch-1 copy of recurrent models and transposed
    convolutions), so a reshape computes its batch at run time."""
    kind = type(layer).__name__
    previous = previous or {}
    if kind == "TFOpLambda":
        symbol = getattr(layer, "symbol", "")
        return (TF_OPS[symbol], f"tf.{symbol}") if symbol in TF_OPS else (("?",), f"tf.{symbol} is not in the table")
    if kind == "SlicingOpLambda":
        return ("STRIDED_SLICE",), "slice"
    if kind == "BatchNormalization":
        folds = previous.get("tail") in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and \
            not previous.get("activated")
        return ((), "folded into the layer before") if folds else (("MUL", "ADD"), "")
    if kind in ("ReLU", "Activation"):
        if kind == "ReLU" and (layer.negative_slope or layer.threshold):
            return ("LEAKY_RELU",), ""
        name = getattr(layer.activation, "__name__", "") if kind == "Activation" else \
            "relu6" if layer.max_value == 6 else "relu" if layer.max_value is None else "?"
        if name in FUSED:
            if name == "linear":
                return (), ""
            if previous.get("tail") in FUSES_RELU and not previous.get("activated"):
                return (), "fused into the operator before"
            return ("RELU6",) if name == "relu6" else ("RELU",), ""
        return (ACTIVATIONS[name], "") if name in ACTIVATIONS else (("?",), f"activation {name!r}")
    if kind == "Rescaling":
        return ("MUL",) if not getattr(layer, "offset", 0.0) else ("MUL", "ADD"), ""
    if kind == "UpSampling2D":
        return ("RESIZE_BILINEAR" if layer.interpolation == "bilinear" else "RESIZE_NEAREST_NEIGHBOR",), ""
    if (kind, bool(getattr(layer, "unroll", False))) in RECURRENT:
        last = () if layer.return_sequences or layer.unroll else ("STRIDED_SLICE",)
        ops = RECURRENT[kind, bool(layer.unroll)] + last
        return ops, "unrolled" if layer.unroll else "a WHILE loop and its body" if "WHILE" in ops else ""
    if kind not in LAYERS:
        return ("?",), f"{kind} is not in the table"
    activation = _activation(layer) if hasattr(layer, "activation") else ((), False)
    if activation is None:
        return ("?",), f"activation {getattr(layer.activation, '__name__', layer.activation)!r}"
    if activation[1] and kind in ("Conv2DTranspose", "Conv1DTranspose"):  # measured: not fused there
        activation = (("RELU6",) if layer.activation.__name__ == "relu6" else ("RELU",), False)
    if kind == "Reshape" and open_batch:
        return RESHAPE_OPEN_BATCH, "the batch is computed at run time"
    if kind == "Dense" and open_batch and len(getattr(layer, "input_shape", ()) or ()) > 2:
        return DENSE_RANK_N + activation[0], "on a rank-3+ input: its shape is computed at run time"
    return LAYERS[kind] + activation[0], ""


def _activated(layer) -> bool:
    """Whether the layer's output has been through an activation (fused or not): nothing more fuses into it."""
    if type(layer).__name__ in ("ReLU", "Activation"):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") != "linear" if activation is not None else False


def _walk(model, prefix: str = "", open_batch: bool = True) -> list[dict]:
    """One entry per leaf layer, nested models flattened (their layers named `outer/inner`). Each entry keeps
    `tail` (the last operator on its path) and `activated` for the layer after it."""
    import tf_keras as keras

    entries, by_layer = [], {}
    for layer in model.layers:
        name = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            inner = _walk(layer, f"{name}/", open_batch)
            entries += inner
            by_layer[id(layer)] = inner[-1] if inner else {}
            continue
        inbound = _inbound(layer)
        previous = by_layer.get(id(inbound[0]), {}) if len(inbound) == 1 else {}
        ops, note = layer_ops(layer, previous, open_batch)
        if not open_batch:  # with a static shape the converter writes EXPAND_DIMS as RESHAPE
            ops = tuple("RESHAPE" if op == "EXPAND_DIMS" else op for op in ops)
        computing = [op for op in ops if op not in NO_COMPUTE]
        entry = {"layer": name, "class": type(layer).__name__, "ops": list(ops), "note": note,
                 "tail": computing[-1] if computing else previous.get("tail"),
                 "activated": _activated(layer) or (not ops and previous.get("activated", False))}
        entries.append(entry)
        by_layer[id(layer)] = entry
    for layer in model.layers:  # a constant scale feeding weights only may be folded into them
        consumers = [node.outbound_layer for node in getattr(layer, "_outbound_nodes", [])]
        if type(layer).__name__ in ("Normalization", "Rescaling") and consumers and \
                all(type(consumer).__name__ in WEIGHTED_LAYERS for consumer in consumers):
            by_layer[id(layer)]["note"] = "may be folded into the weights of the layer after it"
            by_layer[id(layer)]["foldable"] = True
    return entries


def _int8(variant: str) -> bool:
    return variant == "int8" or variant.endswith("_int8")


def check(model, variants, targets) -> dict:
    """The preflight of `model` for `variants` (names from export.variants) and `targets` (micro.Target).

    Returns:
        {"layers": [{layer, class, ops, note}], "ops": every operator, "unknown": layers the table does not
        know, "unsupported": [{layer, op, why}] that stop export, "reference_only": {target: [{layer, op}]},
        "warnings": one line each, "stop": the one line that stops export, or None}.
    """
    from deploy import tflite

    # deploy/tflite.py converts a batch-1 copy of these models; the others keep an open batch dimension
    open_batch = not any(isinstance(layer, tflite.FIXED_BATCH_LAYERS) for layer in model.submodules)
    walked = _walk(model, "", open_batch)
    layers = [{key: entry[key] for key in ("layer", "class", "ops", "note")} for entry in walked]
    foldable = {entry["layer"] for entry in walked if entry.get("foldable")}
    available, int8 = tflm_ops(), [variant for variant in variants if _int8(variant)]
    micro_targets = [target for target in targets if target.runtime == "tflm"]
    unsupported, warnings, reference = [], [], {}
    for entry in layers:
        where = f"layer '{entry['layer']}' ({entry['class']}{', ' + entry['note'] if entry['note'] else ''})"
        for op in entry["ops"]:
            if op in INT8_BLOCKED and int8:
                unsupported.append({"layer": entry["layer"], "op": op, "why": f"{where} becomes {op}: "
                                    f"{INT8_BLOCKED[op]}; leave {', '.join(int8)} out of export.variants"})
            elif op != "?" and op not in available and micro_targets:
                unsupported.append({"layer": entry["layer"], "op": op, "why": f"{where} becomes {op}, which TFLite "
                                    f"Micro does not have (targets {', '.join(t.name for t in micro_targets)} run "
                                    "TFLM); replace the layer or leave those targets out of export.targets"})
            elif op in FLOAT_IN_INT8 and int8:
                warnings.append(f"{where} becomes {op}, which has no int8 kernel: the int8 variants run it in "
                                "float between DEQUANTIZE and QUANTIZE")
        if entry["ops"] == ["?"]:
            warnings.append(f"{where}: not in the preflight table; its operators are known only after conversion")
    for target in micro_targets:
        library = kernel_library(target)
        if library not in OPTIMIZED:
            continue
        # a scale that may be folded into the next layer's weights is named too, said so: the converter folds a
        # Normalization's MUL, and its SUB only where the convolution after it pads nothing (measured)
        slow = [{"layer": entry["layer"], "op": op, **({"may_fold": True} if entry["layer"] in foldable else {})}
                for entry in layers for op in dict.fromkeys(entry["ops"])
                if op not in OPTIMIZED[library] and op not in NO_COMPUTE and op != "?"]
        reference[target.name] = slow
        if slow:
            warnings.append(f"{target.name} ({library}): reference kernels only for " + ", ".join(
                f"{item['op']} (layer '{item['layer']}'{', unless folded' if item.get('may_fold') else ''})"
                for item in slow))
    ops = list(dict.fromkeys(op for entry in layers for op in entry["ops"] if op != "?"))
    return {"layers": layers, "ops": ops, "tflm_ops": len(available),
            "unknown": [entry["layer"] for entry in layers if entry["ops"] == ["?"]],
            "unsupported": unsupported, "reference_only": reference, "warnings": warnings,
            "stop": ("export preflight: " + "; ".join(item["why"] for item in unsupported)) if unsupported else None}


def flatbuffer_ops(flatbuffer: bytes) -> list[str]:
    """The builtin operators a flatbuffer's operators use, in every subgraph (a WHILE loop's body too), in
    first-use order: exactly what a MicroMutableOpResolver must register."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    codes = [names[max(code.builtinCode, code.deprecatedBuiltinCode)] for code in model.operatorCodes]
    return list(dict.fromkeys(codes[op.opcodeIndex] for graph in model.subgraphs for op in graph.operators or []))
