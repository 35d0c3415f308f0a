"""Will it fit? Device targets, TensorFlow Lite for Microcontrollers, hardware-independent cost, a C array.

- Targets: named memory budgets (RAM and flash in bytes) with their runtime (`litert` on a Linux device, `tflm`
  on a microcontroller); a few presets live here, in one place.
- TFLM: a variant runs on the Python interpreter of TensorFlow Lite for Microcontrollers (`tflite-micro`, the
  reference kernels of a microcontroller). The arena it needed is read back from its recording allocator, and
  its outputs are compared with LiteRT's on the same inputs.
- Cost: multiply-accumulates and parameters counted from the flatbuffer's own tensors, per layer.
- The microcontroller bundle: the flatbuffer as an aligned C array, the arena size to reserve, and the ops to
  register in a `MicroMutableOpResolver`.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile

import numpy as np

import models

# What the runtime itself takes besides the model and its tensors: a stated allowance, not a measurement.
# TFLM: interpreter and the reference or CMSIS-NN kernels of a small CNN on a Cortex-M, about 60-100 KB of
# flash; a few KB of RAM for the interpreter's structures and the stack. LiteRT: the shared library and the
# process around it on a Linux device.
RUNTIME_FLASH = {"tflm": 100 * 1024, "litert": 8 * 1024 * 1024}
RUNTIME_RAM = {"tflm": 8 * 1024, "litert": 64 * 1024 * 1024}


@dataclasses.dataclass(frozen=True)
class Target:
    """A device's memory budget, the runtime that executes the model there, and what the latency and energy
    estimates need (deploy/latency.py): the core, its clock, the kernel library, an optional deadline, and the
    duty cycle and battery that battery life assumes."""

    name: str
    ram_bytes: int
    flash_bytes: int
    runtime: str  # "tflm" or "litert"
    cores: int | None = None
    description: str = ""
    core: str | None = None  # one of latency.CORES: cortex-m0plus, cortex-m4f, ..., xtensa-lx6, rv32imc, cortex-a72
    mhz: float | None = None
    kernels: str = ""  # tflm-reference, cmsis-nn, esp-nn, xnnpack (or a vendor runtime of the anchors); "" default
    deadline_ms: float | None = None  # the latest an inference may finish; the bundle must meet it
    inferences_per_hour: float | None = None  # duty cycle of the battery-life estimate
    battery_mah: float | None = None
    battery_volts: float = 3.7
    sleep_uw: float = 0.0  # the board's power between inferences; not counted unless given
    active_mw: float | None = None  # the board's power while it infers; unset: from the core's measured anchors

    def __post_init__(self):
        if not self.kernels:  # what the runtime runs without an optimized build
            object.__setattr__(self, "kernels", "tflm-reference" if self.runtime == "tflm" else "xnnpack")

    @property
    def runtime_flash_bytes(self) -> int:
        return RUNTIME_FLASH[self.runtime]

    @property
    def runtime_ram_bytes(self) -> int:
        return RUNTIME_RAM[self.runtime]


KIB, MIB = 1024, 1024 * 1024
# Clocks and kernels are those of a board the anchors measured where one exists (deploy/anchors/mcu_latency.csv):
# the STM32L4R5 (Cortex-M4F, 120 MHz) of MLPerf Tiny's reference results, the STM32F746 (Cortex-M7, 216 MHz),
# the ESP32-S3 (240 MHz); each with the optimized kernels a user builds TFLM with (CMSIS-NN, ESP-NN). The duty
# cycle (one inference a second) and a 1000 mAh 3.7 V cell are an example a user overrides.
BATTERY = {"inferences_per_hour": 3600.0, "battery_mah": 1000.0}
PRESETS = {target.name: target for target in (
    Target("cortex_m4", 256 * KIB, 1 * MIB, "tflm", 1, "Cortex-M4 board (for example STM32F4, nRF52840 class)",
           "cortex-m4f", 120.0, "cmsis-nn", **BATTERY),
    Target("cortex_m7", 512 * KIB, 2 * MIB, "tflm", 1, "Cortex-M7 board (for example STM32F7 / i.MX RT class)",
           "cortex-m7", 216.0, "cmsis-nn", **BATTERY),
    Target("esp32_s3", 512 * KIB, 8 * MIB, "tflm", 2, "ESP32-S3 module, internal SRAM only (no PSRAM)",
           "xtensa-lx7", 240.0, "esp-nn", **BATTERY),
    Target("raspberry_pi", 1024 * MIB, 16 * 1024 * MIB, "litert", 4, "Raspberry Pi class Linux device, 1 GB",
           "cortex-a72", 1500.0, "xnnpack"),
)}
FIELDS = {field.name for field in dataclasses.fields(Target)}
NUMBERS = ("mhz", "deadline_ms", "inferences_per_hour", "battery_mah", "battery_volts", "active_mw")


def resolve(item: str | dict) -> Target:
    """A preset by name, or a profile given as a mapping (`name`, `ram_bytes`, `flash_bytes`, `runtime`,
    optional `cores`, `description`, `core`, `mhz`, `kernels`, `deadline_ms`, `inferences_per_hour`,
    `battery_mah`, `battery_volts`, `sleep_uw`, `active_mw`), or a preset with some of them changed
    (`{preset: cortex_m4, deadline_ms: 5}`).

    Raises:
        ValueError: unknown preset or key, a missing key, or an impossible number; the message names it.
    """
    from deploy import latency

    if isinstance(item, str):
        if item not in PRESETS:
            raise ValueError(f"unknown target {item!r} (presets: {', '.join(PRESETS)}; or a mapping with "
                             "name, ram_bytes, flash_bytes, runtime)")
        return PRESETS[item]
    if not isinstance(item, dict):
        raise ValueError(f"a target is a preset name or a mapping, got {item!r}")
    if "preset" in item:
        base = resolve(str(item["preset"]))
        item = {**{key: value for key, value in dataclasses.asdict(base).items() if value is not None},
                **{key: value for key, value in item.items() if key != "preset"}}
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (keys: preset, {', '.join(sorted(FIELDS))})")
    missing = [key for key in ("name", "ram_bytes", "flash_bytes", "runtime") if key not in item]
    if missing:
        raise ValueError(f"missing key {missing[0]!r}")
    name = str(item["name"])
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}", name):
        raise ValueError(f"name {name!r}: letters, digits, '_', '.', '-' only, not starting with '.', at most 100 "
                         "characters (it names a bundle folder)")
    if item["runtime"] not in RUNTIME_FLASH:
        raise ValueError(f"{name}.runtime: one of {', '.join(RUNTIME_FLASH)}, got {item['runtime']!r}")
    for key in ("ram_bytes", "flash_bytes", "cores"):
        value = item.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}.{key}: a positive whole number, got {value!r}")
    for key in (*NUMBERS, "sleep_uw"):
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or
                                  (value == 0 and key in NUMBERS)):
            raise ValueError(f"{name}.{key}: a positive number, got {value!r}")
    if item.get("core") is not None and item["core"] not in latency.CORES:
        raise ValueError(f"{name}.core: one of {', '.join(latency.CORES)}, got {item['core']!r}")
    if item.get("kernels") and item["kernels"] not in latency.KERNELS + latency.VENDOR_RUNTIMES:
        raise ValueError(f"{name}.kernels: one of {', '.join(latency.KERNELS + latency.VENDOR_RUNTIMES)}, got "
                         f"{item['kernels']!r}")
    return Target(**{**item, "description": str(item.get("description", ""))})


def resolve_all(items, field: str) -> list[Target]:
    """Every target of a config list (`export.targets`, `search.targets`), their names distinct.

    Raises:
        ValueError: naming `field[index]` and what is wrong with it, or the repeated names.
    """
    targets = []
    for index, item in enumerate(items):
        try:
            targets.append(resolve(item))
        except ValueError as error:
            raise ValueError(f"{field}[{index}]: {error}") from None
    names = [target.name for target in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"{field}: names must differ, got {names}")
    return targets


class NativeOutput:
    """Captures what native code writes to file descriptor 2 during the block (`.text` afterwards)."""

    def __enter__(self):
        self.file = tempfile.TemporaryFile()
        self.redirect = models.native_stderr_to(self.file.fileno())
        self.redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self.redirect.__exit__(*exc)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()


class Unsupported(RuntimeError):
    """The flatbuffer cannot run on TFLM; `ops` names the operators its resolver lacks."""

    def __init__(self, message: str, ops: list[str]):
        super().__init__(message)
        self.ops = ops


def ops(flatbuffer: bytes) -> list[str]:
    """The builtin operators the model uses, in first-use order (what a MicroMutableOpResolver must add)."""
    from ai_edge_litert.interpreter import Interpreter

    names = [detail["op_name"] for detail in Interpreter(model_content=flatbuffer)._get_ops_details()]
    return list(dict.fromkeys(names))


# MicroMutableOpResolver's methods whose names do not follow the rule CONV_2D -> AddConv2D()
# (tensorflow/tflite-micro tensorflow/lite/micro/micro_mutable_op_resolver.h).
RESOLVER_METHODS = {"BATCH_MATMUL": "AddBatchMatMul", "CUMSUM": "AddCumSum", "PADV2": "AddPadV2",
                    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM"}


def resolver_call(op: str) -> str:
    """The MicroMutableOpResolver call that registers a builtin operator: CONV_2D -> AddConv2D(),
    UNIDIRECTIONAL_SEQUENCE_LSTM -> AddUnidirectionalSequenceLSTM()."""
    if op in RESOLVER_METHODS:
        return RESOLVER_METHODS[op] + "()"
    return "Add" + "".join(part if part[:1].isdigit() else part.capitalize() for part in op.split("_")) + "()"


def tflm_run(flatbuffer: bytes, inputs: np.ndarray, activations: int | None = None) -> tuple[np.ndarray, int]:
    """Runs raw (already quantized) inputs one at a time on the TFLM interpreter.

    Returns:
        (outputs stacked, the arena bytes the recording allocator used).

    Raises:
        Unsupported: TFLM's resolver lacks operators of the model (named), or the model cannot be prepared.
    """
    from tflite_micro.python.tflite_micro import runtime

    with NativeOutput() as native:
        try:
            # The arena holds tensors, not weights: room for every activation without reuse, plus headroom for
            # the interpreter's own structures; what it used is measured below.
            if activations is None:
                activations = activation_bytes(flatbuffer)
            arena = max(2 * activations + (256 << 10), 1 << 20)
            interpreter = runtime.Interpreter.from_bytes(flatbuffer, arena_size=arena)
            outputs = []
            for item in inputs:
                interpreter.reset()  # variable tensors (a recurrent layer's state) start from zero per window
                interpreter.set_input(item[None].astype(interpreter.get_input_details(0)["dtype"]), 0)
                interpreter.invoke()
                outputs.append(interpreter.get_output(0)[0].copy())
            interpreter.print_allocations()
            failure = None
        except (RuntimeError, ValueError) as error:
            failure = error
    if failure is not None:
        missing = re.findall(r"[Dd]idn't find op for builtin opcode '([A-Z0-9_]+)'", native.text)
        missing += re.findall(r"Failed to get registration from op code ([A-Z0-9_]+)", native.text)
        refused = re.findall(r"Node ([A-Z0-9_]+) \(number (\d+)\) failed to prepare", native.text)
        missing = list(dict.fromkeys(missing + [op for op, _ in refused]))
        lines = [line.strip() for line in native.text.splitlines() if line.strip()]
        why = [line.split(" ", 1)[1] if line.startswith("tensorflow/") else line for line in lines
               if "failed to prepare" not in line and "RecordingMicroAllocator" not in line]
        if missing:
            reason = f"TFLM's kernels do not support {', '.join(missing)} in this model"
            reason += f" ({why[-1]})" if why else ""
        else:
            reason = f"TFLM could not run it: {lines[-1] if lines else failure}"
        raise Unsupported(reason, missing)
    found = re.search(r"Arena allocation total (\d+) bytes", native.text)
    if not found:
        raise RuntimeError("the TFLM interpreter did not report its arena allocation")
    return np.stack(outputs), int(found.group(1))


def _constants(details: list[dict], op_details: list[dict]) -> set[int]:
    produced = {index for op in op_details for index in op["outputs"]}
    return {index for op in op_details for index in op["inputs"] if index >= 0 and index not in produced}


WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "CONV_3D")


def cost(flatbuffer: bytes) -> dict:
    """Multiply-accumulates and parameters from the flatbuffer's tensors, in total and per layer.

    MACs count convolutions (output elements x kernel area x input channels), depthwise convolutions (output
    elements x kernel area), fully connected and batch matmul layers; other operators count no MACs.
    Parameters are the elements of the constant tensors (weights and biases) the layers read. Each layer also
    names the elements of its first activation input and whether all its tensors are integers (what the
    latency model, deploy/latency.py, reads).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    details = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    op_details = interpreter._get_ops_details()
    graph_inputs = {detail["index"] for detail in interpreter.get_input_details()}
    constants = _constants(list(details.values()), op_details) - graph_inputs
    layers, counted = [], set()
    for op in op_details:
        name, inputs, outputs = op["op_name"], [i for i in op["inputs"] if i >= 0], op["outputs"]
        out_shape = details[outputs[0]]["shape"] if outputs else np.array([])
        out_elements = int(np.prod(out_shape)) if len(out_shape) else 0
        macs = 0
        if name == "CONV_2D" and len(inputs) > 1:
            kernel = details[inputs[1]]["shape"]  # [out_channels, kh, kw, in_channels]
            macs = out_elements * int(np.prod(kernel[1:]))
        elif name == "DEPTHWISE_CONV_2D" and len(inputs) > 1:
            kernel = details[inputs[1]]["shape"]  # [1, kh, kw, channels]
            macs = out_elements * int(kernel[1] * kernel[2])
        elif name in ("FULLY_CONNECTED", "BATCH_MATMUL") and len(inputs) > 1:
            macs = out_elements * int(details[inputs[1]]["shape"][-1 if name == "FULLY_CONNECTED" else -2])
        # Weights and biases of weighted layers (int32 biases included); elsewhere only float or int8 constants
        # (a normalization's mean), not shapes or axes.
        weights = [i for i in inputs if i in constants and i not in counted and
                   (name in WEIGHTED or np.dtype(details[i]["dtype"]).kind == "f" or details[i]["dtype"] == np.int8)]
        params = sum(int(np.prod(details[i]["shape"])) for i in weights)
        counted.update(weights)
        activations = [i for i in inputs if i not in constants]
        in_elements = int(np.prod(details[activations[0]]["shape"])) if activations else 0
        layers.append({"index": op["index"], "op": name, "output": out_shape.tolist(), "macs": macs,
                       "params": params, "input_elements": in_elements,
                       "integer": all(np.dtype(details[i]["dtype"]).kind in "iu" for i in [*inputs, *outputs])})
    return {"macs": sum(layer["macs"] for layer in layers), "params": sum(layer["params"] for layer in layers),
            "layers": layers}


def activation_bytes(flatbuffer: bytes) -> int:
    """Bytes of every non-constant tensor, with no reuse: an upper bound of LiteRT's working memory."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    details = interpreter.get_tensor_details()
    inputs = {detail["index"] for detail in interpreter.get_input_details()}
    constants = _constants(details, interpreter._get_ops_details()) - inputs
    return sum(int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize for detail in details
               if detail["index"] not in constants)


def fit(target: Target, model_bytes: int, ram_needed: int) -> dict:
    """One cell of the fit table: what the variant needs on `target` and the verdict."""
    flash = model_bytes + target.runtime_flash_bytes
    ram = ram_needed + target.runtime_ram_bytes
    fits = flash <= target.flash_bytes and ram <= target.ram_bytes
    return {"flash_bytes": flash, "ram_bytes": ram, "flash_margin_bytes": target.flash_bytes - flash,
            "ram_margin_bytes": target.ram_bytes - ram, "fits": fits}


def c_string(text: str) -> str:
    """A C string literal of `text` (UTF-8): backslash, quote and every byte outside printable ASCII escaped, so no
    name can end the literal or the line."""
    escaped = []
    for byte in text.encode("utf-8"):
        character = chr(byte)
        escaped.append("\\" + character if character in '"\\' else character if 32 <= byte < 127 and
                       character != "?" else f"\\{byte:03o}")
    return '"' + "".join(escaped) + '"'


def c_array(flatbuffer: bytes, arena_bytes: int, op_names: list[str], labels: list[str],
            input_quantization: tuple[float, int], symbol: str = "g_model_data") -> tuple[str, str]:
    """(model_data.cc, model_data.h): the flatbuffer as a 16-byte aligned array, its length, the arena size to
    reserve, the operators to register, the labels and the input quantization."""
    scale, zero_point = input_quantization
    rows = [", ".join(f"0x{byte:02x}" for byte in flatbuffer[start:start + 12])
            for start in range(0, len(flatbuffer), 12)]
    cc = ("// Generated by the pipeline's export stage: the TF-Lite flatbuffer, byte for byte.\n"
          '#include "model_data.h"\n\n'
          f"alignas(16) const unsigned char {symbol}[] = {{\n  " + ",\n  ".join(rows) + "\n};\n"
          f"const unsigned int {symbol}_len = {len(flatbuffer)};\n")
    registrations = "\n".join(f"  if (resolver.{resolver_call(op)} != kTfLiteOk) return kTfLiteError;"
                              for op in op_names)
    quoted = ", ".join(c_string(label) for label in labels)
    header = ("// Generated by the pipeline's export stage.\n#pragma once\n\n"
              '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
              f"extern const unsigned char {symbol}[];\nextern const unsigned int {symbol}_len;\n\n"
              f"// The arena TFLM used for this model, measured; reserve it (a little more is harmless).\n"
              f"constexpr int kTensorArenaSize = {arena_bytes};\n"
              f"constexpr int kOpCount = {len(op_names)};\n"
              f"constexpr float kInputScale = {scale!r}f;\nconstexpr int kInputZeroPoint = {zero_point};\n"
              f"constexpr int kLabelCount = {len(labels)};\n"
              f"inline const char* const kLabels[kLabelCount] = {{{quoted}}};\n\n"
              "// tflite::MicroMutableOpResolver<kOpCount> resolver; RegisterOps(resolver);\n"
              "template <typename Resolver>\nTfLiteStatus RegisterOps(Resolver& resolver) {\n"
              f"{registrations}\n  return kTfLiteOk;\n}}\n")
    return cc, header
