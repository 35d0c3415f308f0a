"""How fast, and at what energy, on a device we do not have: a cost model fitted to published measurements.

An int8 flatbuffer is summarized by five counts from its own tensors (deploy/micro.py `cost`): multiply-
accumulates of convolutions and fully connected layers, those of depthwise convolutions, dot products (one
requantized output element of a convolution, depthwise convolution or fully connected layer each), elements that
other operators (add, pooling, softmax) touch, and operators. Cycles are

    scale[core, kernels] x ((macs x w_mac + depthwise_macs x w_dw) / peak[core] + dots x requantize[core] x w_dot
                            + elements x w_elem + ops x w_op)

Depthwise MACs are their own term because every kernel library runs them at a fraction of a convolution's
rate (one channel per filter: no reduction over input channels to vectorize, each input byte loaded for a few
MACs); counted with the rest, DS-CNN and MobileNet raised the MAC weight that the fully connected autoencoder,
which has none, was then predicted with (+0.63 on MLPerf Tiny v0.5's Cortex-M4 row).

with one weight vector per kernel family (`reference`: TFLite Micro's portable C kernels; `optimized`: SIMD
libraries and vendor runtimes, CMSIS-NN, ESP-NN, X-CUBE-AI, Plumerai, ONNC, Bosch's), a scale and a small,
shrunk per-term deviation per core and kernel library, and `peak` the core's int8 multiply-accumulates per
cycle from its instruction set (a stated fact, not fitted; the reference kernels are scalar on every core).
`requantize` is the core's cost of one output element's requantization relative to a core with a long multiply
(also from its instruction set: 4 on the Cortex-M0+, 1 elsewhere). The coefficients are fitted (least squares
on log cycles) to `anchors/mcu_latency.csv`, MLPerf Tiny's and two vendors' published latencies of the reference
models of models/reference.py, whose counts are in `anchors/reference_profiles.json` (written by
`make bench ARGS=tiny`). Milliseconds are cycles / MHz.

The band is the spread of the leave-one-out errors of the same kernel family (the 10th to 90th percentile):
each anchor row predicted by a model fitted without it. Energy is the active power of the measured rows of the
core and kernel library, else of the core (energy / latency, in mW per MHz), times the estimate; battery life
follows from a duty cycle. A core or kernel library with no anchor says so instead of guessing; Linux cores
(cortex-a*) have none yet.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from pathlib import Path

import numpy as np

ANCHORS = Path(__file__).parent / "anchors" / "mcu_latency.csv"  # ../shared/anchors/mcu_latency.csv + 4 ESP32 rows
PROFILES = Path(__file__).parent / "anchors" / "reference_profiles.json"
# A profile's counts, one design column each. `macs` counts every MAC, depthwise included; its column holds the
# others (`_design`), so that depthwise MACs are costed apart.
TERMS = ("macs", "dot_products", "elementwise_elements", "op_count", "depthwise_macs")
MACS, DOTS, DEPTHWISE = TERMS.index("macs"), TERMS.index("dot_products"), TERMS.index("depthwise_macs")

# int8 multiply-accumulates per cycle that the core's instruction set allows (Arm and Espressif reference
# manuals): no SIMD on the M0+ (a MULS and an ADDS per MAC); SMLAD's two 16-bit MACs on M4, M33; M7's dual issue
# overlaps the loads with SMLAD (taken as 4); Helium (M55, M85) and the ESP32-S3's PIE: 128-bit vectors, 8 per
# cycle on Helium's two beats, 16 on PIE.
PEAK_MACS_PER_CYCLE = {"cortex-m0plus": 0.5, "cortex-m4f": 2.0, "cortex-m33": 2.0, "cortex-m7": 4.0,
                       "cortex-m55": 8.0, "cortex-m85": 8.0, "xtensa-lx6": 0.5, "xtensa-lx7": 16.0, "rv32imc": 0.5}
# Cost of one requantization (an output element's int32 accumulator times its multiplier, TFLite's
# MultiplyByQuantizedMultiplier, in every kernel library) relative to a core with a 32x32->64 multiply (SMULL,
# MULH): Armv6-M (Cortex-M0+) has none, so the long product is built from four 16x16 MULS partial products.
# Without it, the M0+ class's dot-product cost came from cores that have one, and the class's MAC-bound ResNet
# was predicted 1.6 times its measurement from its dot-product-bound models (leave-one-out, +0.60).
REQUANTIZE_FACTOR = {"cortex-m0plus": 4.0}
# Cores built with the same SDK and memory system: ESP-IDF's default build and flash-cached code on Espressif's
# ESP32 (LX6), ESP32-S3 (LX7) and ESP32-C3 (RV32IMC) run TFLite Micro's reference kernels 8 to 14 times slower
# per clock than the anchors' `tflm-reference-2.3.1` Cortex-M4 rows (which, their build scripts show, used 2020's
# CMSIS-NN: see the anchors file's caveat), a property of the platform no instruction count predicts. A core
# with no anchor for a kernel family borrows what its group's classes predict (their geometric mean) before the
# family's mean.
CORE_GROUPS = {"xtensa-lx6": "espressif", "xtensa-lx7": "espressif", "rv32imc": "espressif"}
LINUX_CORES = ("cortex-a53", "cortex-a72", "cortex-a76")
CORES = tuple(PEAK_MACS_PER_CYCLE) + LINUX_CORES
KERNELS = ("tflm-reference", "cmsis-nn", "esp-nn", "xnnpack")
VENDOR_RUNTIMES = ("x-cube-ai", "plumerai", "onnc-zephyr", "bosch-hale", "microtvm")  # runtimes of the anchors
PRIOR_CYCLES = (1.0, 50.0, 5.0, 1000.0, 1.0)  # per MAC / peak, dot product, element, operator, depthwise MAC / peak
PRIOR = 0.1  # pull of the family weights toward PRIOR_CYCLES (log scale): enough that solvers agree on one fit
SHRINK = 0.1  # penalty weight on the per-class deviations from the family's weights (chosen by the LOO error)


def kernels_of(runtime: str) -> str:
    """An anchor's runtime column as a kernel library: tflm-reference-2.3.1 -> tflm-reference,
    tflm-cmsis-nn(-helium) -> cmsis-nn, microtvm-cmsis-nn -> cmsis-nn (microTVM hands convolutions, depthwise
    convolutions, fully connected layers, pooling and softmax to CMSIS-NN), tflm-esp-nn -> esp-nn; a vendor
    runtime keeps its name without version (microtvm alone: TVM's own generated kernels)."""
    name = re.sub(r"[-.0-9]+$", "", runtime)
    if name.startswith("tflm-reference"):
        return "tflm-reference"
    return {"tflm-cmsis-nn-helium": "cmsis-nn", "tflm-cmsis-nn": "cmsis-nn", "microtvm-cmsis-nn": "cmsis-nn",
            "tflm-esp-nn": "esp-nn"}.get(name, name)


def family(kernels: str) -> str:
    return "reference" if kernels == "tflm-reference" else "optimized"


def anchors(path: Path = ANCHORS) -> list[dict]:
    """The anchor rows (comment lines skipped), with `cycles` and `kernels` added."""
    with open(path) as file:
        rows = list(csv.DictReader(line for line in file if not line.startswith("#")))
    for row in rows:
        row["cycles"] = float(row["latency_ms"]) * float(row["mhz"]) * 1e3
        row["kernels"] = kernels_of(row["runtime"])
    return rows


def profile(cost: dict) -> dict:
    """The counts of a model (`micro.cost(flatbuffer)`, TERMS), and whether every operator is integer-only."""
    counts = dict.fromkeys(TERMS, 0)
    for layer in cost["layers"]:
        counts["op_count"] += 1
        elements = int(np.prod(layer["output"])) if layer["output"] else 0
        if layer["macs"]:
            counts["macs"] += layer["macs"]
            counts["dot_products"] += elements
            if layer["op"] == "DEPTHWISE_CONV_2D":
                counts["depthwise_macs"] += layer["macs"]
        elif layer["op"] not in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):  # a view, no data moved in TFLM
            counts["elementwise_elements"] += max(elements, layer.get("input_elements", 0))
    return {**counts, "integer_only": int(all(layer.get("integer", True) for layer in cost["layers"]))}


def reference_profiles(path: Path = PROFILES) -> dict:
    return json.loads(path.read_text())


def _design(counts: dict, core: str, kernels: str) -> np.ndarray:
    values = np.array([float(counts[term]) for term in TERMS])
    values[MACS] -= values[DEPTHWISE]  # the MACs of convolutions and fully connected layers
    if family(kernels) == "optimized":
        values[[MACS, DEPTHWISE]] /= PEAK_MACS_PER_CYCLE[core]
    values[DOTS] *= REQUANTIZE_FACTOR.get(core, 1.0)
    return values


class Fit:
    """The fitted weights per family, scale and deviations per (core, kernels) class."""

    def __init__(self, rows: list[dict], profiles: dict, shrink: float = SHRINK):
        from scipy.optimize import least_squares

        self.families = sorted({family(row["kernels"]) for row in rows})
        self.classes = sorted({(row["core"], row["kernels"]) for row in rows})
        x = np.array([_design(profiles[row["model"]], row["core"], row["kernels"]) for row in rows])
        y = np.log([row["cycles"] for row in rows])
        fam = np.array([self.families.index(family(row["kernels"])) for row in rows])
        cls = np.array([self.classes.index((row["core"], row["kernels"])) for row in rows])
        nf, nc, nt = len(self.families), len(self.classes), len(TERMS)

        center = np.log([list(PRIOR_CYCLES)] * nf)

        def unpack(p):
            return p[:nf * nt].reshape(nf, nt), p[nf * nt:nf * nt + nc], p[nf * nt + nc:].reshape(nc, nt)

        def parts(p):
            weights, scales, deviations = unpack(p)
            terms = x * np.exp(weights[fam] + deviations[cls])
            return terms, terms.sum(axis=1), scales

        # Residuals: log error per row; the deviations shrunk toward zero; weak priors keep scales near 1 and the
        # weights near PRIOR_CYCLES (a family seen on few models, the reference kernels, is otherwise
        # underdetermined: two solvers then stopped at fits 0.3 apart on a left-out row).
        def residuals(p):
            weights, scales, deviations = unpack(p)
            _, total, _ = parts(p)
            return np.concatenate([np.log(total) + scales[cls] - y, np.sqrt(shrink) * deviations.ravel(),
                                   0.3 * scales, PRIOR * (weights - center).ravel()])

        def jacobian(p):
            terms, total, _ = parts(p)
            share = terms / total[:, None]
            jac = np.zeros((len(rows) + nc * nt + nc + nf * nt, len(p)))
            for index in range(len(rows)):
                jac[index, fam[index] * nt:(fam[index] + 1) * nt] = share[index]
                jac[index, nf * nt + cls[index]] = 1.0
                start = nf * nt + nc + cls[index] * nt
                jac[index, start:start + nt] = share[index]
            offset = len(rows)
            jac[offset:offset + nc * nt, nf * nt + nc:] = np.sqrt(shrink) * np.eye(nc * nt)
            jac[offset + nc * nt:offset + nc * nt + nc, nf * nt:nf * nt + nc] = 0.3 * np.eye(nc)
            jac[offset + nc * nt + nc:, :nf * nt] = PRIOR * np.eye(nf * nt)
            return jac

        start = np.zeros(nf * nt + nc + nc * nt)
        start[:nf * nt] = center.ravel()
        solution = least_squares(residuals, start, jac=jacobian, method="lm")
        self.weights, self.scales, self.deviations = unpack(solution.x)

    def cycles(self, counts: dict, core: str, kernels: str) -> tuple[float, str] | tuple[None, str]:
        """(cycles, what the figure rests on), or (None, why there is none)."""
        if core not in PEAK_MACS_PER_CYCLE:
            return None, f"no anchor for {core} (a Linux core): no estimate"
        name = family(kernels)
        if name not in self.families:
            return None, f"no anchor for the {name} kernel family"
        weights = self.weights[self.families.index(name)]
        if (core, kernels) in self.classes:
            index = self.classes.index((core, kernels))
            value = _design(counts, core, kernels) @ np.exp(weights + self.deviations[index])
            return float(value * np.exp(self.scales[index])), f"fitted to {kernels} on {core}"
        same = [index for index, (other, kind) in enumerate(self.classes) if other == core and family(kind) == name]
        if same:
            basis = ", ".join(self.classes[index][1] for index in same)
            return self._borrowed(counts, core, kernels, same), \
                f"no {kernels} anchor on {core}: from its {name} runtimes ({basis})"
        group = CORE_GROUPS.get(core)
        kin = [index for index, (other, kind) in enumerate(self.classes)
               if group is not None and CORE_GROUPS.get(other) == group and family(kind) == name]
        if kin:
            basis = ", ".join(f"{kind} on {other}" for other, kind in (self.classes[index] for index in kin))
            return self._borrowed(counts, core, kernels, kin), \
                f"no {name} anchor on {core}: from its {group} group ({basis})"
        return None, f"no anchor for {kernels} (or another {name} library) on {core} or its group"

    def _borrowed(self, counts: dict, core: str, kernels: str, classes: list[int]) -> float:
        """The geometric mean of what the other (core, kernels) classes, each with its own scale and deviations,
        predict for these counts: what their fitted figures say, not the family's bare weights."""
        weights = self.weights[self.families.index(family(kernels))]
        design = _design(counts, core, kernels)
        logs = [np.log(design @ np.exp(weights + self.deviations[index])) + self.scales[index] for index in classes]
        return float(np.exp(np.mean(logs)))


def leave_one_out(rows: list[dict], profiles: dict) -> list[dict]:
    """Each anchor row predicted by a fit without it: row, predicted ms, relative error (None where the rest
    leaves nothing to predict it from)."""
    result = []
    for index, row in enumerate(rows):
        fitted = Fit(rows[:index] + rows[index + 1:], profiles)
        cycles, basis = fitted.cycles(profiles[row["model"]], row["core"], row["kernels"])
        if cycles is None:  # nothing left of its core: the class prior is the family on the nearest core
            cycles, basis = _nearest(fitted, profiles[row["model"]], row["core"], row["kernels"])
        predicted = cycles / (float(row["mhz"]) * 1e3)
        result.append({**{key: row[key] for key in ("model", "board", "core", "mhz", "runtime", "kernels")},
                       "latency_ms": float(row["latency_ms"]), "predicted_ms": predicted,
                       "error": predicted / float(row["latency_ms"]) - 1.0, "basis": basis})
    return result


def _nearest(fitted: Fit, counts: dict, core: str, kernels: str) -> tuple[float, str]:
    """The family's weights at the mean scale of its classes: the estimate for a core it has never seen."""
    name = family(kernels)
    same = [index for index, (_, kind) in enumerate(fitted.classes) if family(kind) == name]
    weights = fitted.weights[fitted.families.index(name)]
    return float(_design(counts, core, kernels) @ np.exp(weights) * np.exp(np.mean(fitted.scales[same]))), \
        f"no {name} anchor on {core}: the {name} family's mean"


@functools.lru_cache(maxsize=2)
def fitted(path: Path = ANCHORS, profiles_path: Path = PROFILES) -> tuple[Fit, dict, dict]:
    """(the fit on every anchor row, leave-one-out band per family, mW per MHz per core), computed once."""
    rows, profiles = anchors(path), reference_profiles(profiles_path)
    errors = leave_one_out(rows, profiles)
    bands = {}
    for name in ("reference", "optimized"):
        signed = [item["error"] for item in errors if family(item["kernels"]) == name]
        if signed:
            bands[name] = (float(np.percentile(signed, 10)), float(np.percentile(signed, 90)))
    return Fit(rows, profiles), bands, power_per_mhz(rows)


def power_per_mhz(rows: list[dict]) -> dict[str, float]:
    """Median active power in mW per MHz (µJ / ms = mW) over the rows with a measured energy, per core (`core`)
    and per core and kernel library (`core/kernels`): on the same Cortex-M4 at 120 MHz, ST's rows (the SMPS
    board, NUCLEO-L4R5ZI-P) draw 0.28 mW/MHz and microTVM's on the plain NUCLEO-L4R5ZI 0.44."""
    power = {}
    for row in rows:
        if row.get("energy_uj"):
            value = float(row["energy_uj"]) / float(row["latency_ms"]) / float(row["mhz"])
            power.setdefault(row["core"], []).append(value)
            power.setdefault(_power_key(row["core"], row["kernels"]), []).append(value)
    return {key: float(np.median(values)) for key, values in power.items()}


def _power_key(core: str, kernels: str) -> str:
    return f"{core}/{kernels}"


def summary(errors: list[dict]) -> dict:
    """Median and max absolute relative error, in all and per kernel library, from `leave_one_out`."""
    def figures(items):
        values = np.abs([item["error"] for item in items])
        return float(np.median(values)), float(values.max())

    result = dict(zip(("latency_model_median_abs_error", "latency_model_max_abs_error"), figures(errors)))
    for kernels in sorted({item["kernels"] for item in errors}):
        median, largest = figures([item for item in errors if item["kernels"] == kernels])
        key = re.sub(r"[^a-z0-9]+", "_", kernels)
        result[f"latency_model_median_abs_error_{key}"] = median
        result[f"latency_model_max_abs_error_{key}"] = largest
    return result


def _counts(model) -> dict:
    if isinstance(model, (bytes, bytearray)):
        from deploy import micro

        return profile(micro.cost(bytes(model)))
    return model


def explain(model, target) -> tuple[dict | None, str]:
    """(the estimate or None, what it rests on or why there is none); see `estimate`."""
    counts = _counts(model)
    if not all(term in counts for term in TERMS) or not counts.get("integer_only", 0):
        return None, "no estimate: the anchors are int8 models, and this variant is not integer-only"
    if target.core is None or target.mhz is None:
        return None, "no estimate: the target names no core and clock"
    try:
        fit, bands, power = fitted()
    except FileNotFoundError as error:  # an installation without the anchors: say so rather than guess
        return None, f"no estimate: {error.filename} is missing"
    cycles, basis = fit.cycles(counts, target.core, target.kernels)
    if cycles is None:
        return None, basis
    ms = cycles / (target.mhz * 1e3)
    smallest = min(profile["macs"] for profile in reference_profiles().values())
    if counts["macs"] < smallest:  # the band was measured on the anchors' sizes, not below them
        basis += (f"; extrapolated: {counts['macs']:,} MACs, below the smallest anchor model ({smallest:,}), where "
                  "per-operator overheads, fitted on larger models, dominate")
    low, high = bands[family(target.kernels)]
    result = {"ms": ms, "low_ms": ms / (1 + high), "high_ms": ms / (1 + low), "basis": basis}
    if target.deadline_ms is not None:
        result["meets_deadline"] = bool(ms <= target.deadline_ms)
        result["deadline_margin_ms"] = target.deadline_ms - ms
    per_mhz = power.get(_power_key(target.core, target.kernels), power.get(target.core))
    milliwatts = target.active_mw if target.active_mw is not None else \
        per_mhz * target.mhz if per_mhz is not None else None
    if milliwatts is not None:
        result["energy_uj"] = milliwatts * ms  # mW x ms = µJ
        result.update(battery(result["energy_uj"], target))
    return result, basis


def estimate(model, target) -> dict | None:
    """A model (an int8 flatbuffer, or its `profile` counts) on a target (deploy/micro.py Target): `ms` with its
    band (`low_ms`, `high_ms`), `basis`, and where the target allows, `meets_deadline` and `deadline_margin_ms`,
    `energy_uj` per inference, `average_power_uw` and `battery_hours` at its duty cycle. None where there is no
    estimate (`explain` says why): a float variant, a core or kernel family without anchors."""
    return explain(model, target)[0]


def battery(energy_uj: float, target) -> dict:
    """Average power and battery life at the target's duty cycle (inferences per hour, sleep power between)."""
    if not target.inferences_per_hour or not target.battery_mah:
        return {}
    average_uw = energy_uj * target.inferences_per_hour / 3600.0 + target.sleep_uw
    joules = target.battery_mah * 3.6 * target.battery_volts
    return {"average_power_uw": average_uw, "battery_hours": joules / (average_uw * 1e-6) / 3600.0}
