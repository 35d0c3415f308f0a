"""The latency and energy model (deploy/latency.py), the targets that carry what it needs (deploy/micro.py), the
fit table's estimates and each target's choice (deploy/report.py), and the MLPerf Tiny reference models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deploy import latency, micro, report


@pytest.fixture(scope="module")
def anchors():
    return latency.anchors(), latency.reference_profiles()


def test_every_anchor_row_is_predicted_without_itself_within_the_issue_s_median(anchors):
    rows, profiles = anchors
    errors = latency.leave_one_out(rows, profiles)
    assert len(errors) == len(rows)
    figures = latency.summary(errors)
    assert figures["latency_model_median_abs_error"] <= 0.30
    # The fully connected autoencoder on MLPerf Tiny v0.5's Cortex-M4 build, +0.63 before depthwise MACs had their
    # own term, is within 0.5; ResNet-8 on the Cortex-M0+, +0.60 before its requantization factor, within 0.4.
    ad = next(item for item in errors if item["model"] == "ad" and item["kernels"] == "tflm-reference")
    assert abs(ad["error"]) <= 0.50
    ic = next(item for item in errors if item["model"] == "ic" and item["core"] == "cortex-m0plus")
    assert abs(ic["error"]) <= 0.40
    assert figures["latency_model_max_abs_error"] <= 0.60


def test_the_cortex_m0plus_pays_four_times_a_long_multiply_core_s_requantization(anchors, monkeypatch):
    """Armv6-M has no 32x32->64 multiply: without the factor, the M0+ class's per-output cost comes from cores
    that have one, and its MAC-bound ResNet-8, left out, is predicted from its output-bound models 1.6x too slow."""
    rows, profiles = anchors
    index = next(number for number, row in enumerate(rows) if row["model"] == "ic" and row["core"] == "cortex-m0plus")

    def left_out_error():
        fit = latency.Fit(rows[:index] + rows[index + 1:], profiles)
        cycles, _ = fit.cycles(profiles["ic"], "cortex-m0plus", "bosch-hale")
        return cycles / rows[index]["cycles"] - 1.0

    with_factor = left_out_error()
    monkeypatch.setattr(latency, "REQUANTIZE_FACTOR", {})
    assert abs(with_factor) <= 0.40 < 0.55 <= left_out_error()


def test_a_core_without_an_anchor_of_its_family_borrows_its_group_s_scale(anchors):
    rows, profiles = anchors
    without = [row for row in rows if row["core"] != "xtensa-lx6"]
    fit = latency.Fit(without, profiles)
    cycles, basis = fit.cycles(profiles["person_detection"], "xtensa-lx6", "tflm-reference")
    assert "espressif group" in basis and "xtensa-lx7" in basis and "rv32imc" in basis
    # the group's reference kernels are several times slower per clock than the Cortex-M4's
    m4, _ = fit.cycles(profiles["person_detection"], "cortex-m4f", "tflm-reference")
    assert cycles > 3 * m4
    # borrowed from what the group's classes predict, each with its own deviations: the ESP32 (1.8 times the
    # ESP32-S3's cycles) is then within 0.5 of its measured 4,084 ms (the family's bare weights gave -0.62)
    measured = next(float(row["latency_ms"]) for row in rows
                    if row["core"] == "xtensa-lx6" and row["kernels"] == "tflm-reference")
    assert abs(cycles / 240e3 / measured - 1) <= 0.5
    # a core outside any group, with no anchor, gets no figure rather than a guess
    assert latency.Fit([row for row in without if row["core"] != "cortex-m0plus"], profiles).cycles(
        profiles["kws"], "cortex-m0plus", "bosch-hale")[0] is None


def test_a_row_left_out_does_not_inform_its_own_prediction(anchors):
    rows, profiles = anchors
    index = next(i for i, row in enumerate(rows) if row["model"] == "ic" and row["board"] == "NUCLEO-U575ZI-Q")
    changed = [dict(row) for row in rows]
    changed[index]["cycles"] *= 3.0
    before = latency.leave_one_out(rows, profiles)[index]["predicted_ms"]
    after = latency.leave_one_out(changed, profiles)[index]["predicted_ms"]
    assert after == pytest.approx(before, rel=1e-6)


def test_the_fit_reproduces_its_anchors_and_scales_with_the_clock(anchors):
    rows, profiles = anchors
    fit = latency.Fit(rows, profiles)
    in_sample = [fit.cycles(profiles[row["model"]], row["core"], row["kernels"])[0] / row["cycles"] - 1
                 for row in rows]
    assert np.median(np.abs(in_sample)) < 0.15
    m4 = micro.resolve("cortex_m4")
    twice = dataclasses.replace(m4, mhz=2 * m4.mhz)
    slow, fast = latency.estimate(profiles["kws"], m4), latency.estimate(profiles["kws"], twice)
    assert fast["ms"] == pytest.approx(slow["ms"] / 2)
    assert slow["low_ms"] < slow["ms"] < slow["high_ms"]
    reference = dataclasses.replace(m4, kernels="tflm-reference")
    # v0.5's build (2020's CMSIS-NN, the `reference` family here) against microTVM with 2022's CMSIS-NN
    assert latency.estimate(profiles["kws"], reference)["ms"] > 1.5 * slow["ms"]


def test_energy_is_the_measured_power_of_the_core_and_library_times_the_estimate_and_battery_follows(anchors):
    rows, profiles = anchors
    m4 = micro.resolve({"preset": "cortex_m4", "name": "m4_xcube", "kernels": "x-cube-ai"})
    found = latency.estimate(profiles["kws"], m4)
    measured = next(row for row in rows if row["model"] == "kws" and row["runtime"].startswith("x-cube-ai")
                    and row["core"] == "cortex-m4f")
    # X-CUBE-AI's own power on this core (ST's SMPS board): the core's median, microTVM's rows included, was
    # 38% over the measured energy
    assert found["energy_uj"] == pytest.approx(float(measured["energy_uj"]), rel=0.35)
    hours = m4.battery_mah * 3.6 * m4.battery_volts / (found["energy_uj"] * m4.inferences_per_hour / 3600 * 1e-6) / 3600
    assert found["battery_hours"] == pytest.approx(hours)
    sleeping = dataclasses.replace(m4, sleep_uw=100.0)
    assert latency.estimate(profiles["kws"], sleeping)["battery_hours"] < found["battery_hours"]


def test_no_estimate_is_made_up_where_the_anchors_say_nothing(anchors):
    _, profiles = anchors
    estimate, why = latency.explain(profiles["kws"], micro.resolve("raspberry_pi"))
    assert estimate is None and "cortex-a72" in why
    floating = {**profiles["kws"], "integer_only": 0}
    assert latency.estimate(floating, micro.resolve("cortex_m4")) is None
    m55 = micro.resolve({"preset": "cortex_m4", "name": "m55", "core": "cortex-m55", "kernels": "tflm-reference"})
    assert latency.explain(profiles["kws"], m55)[0] is None
    m7 = micro.resolve({"preset": "cortex_m7", "name": "m7_dark", "active_mw": None})
    assert "energy_uj" in latency.estimate(profiles["kws"], m7)  # the M7 has measured energy in the anchors
    xtensa = latency.estimate(profiles["kws"], micro.resolve("esp32_s3"))
    assert "ms" in xtensa and "energy_uj" not in xtensa  # no energy measured on an ESP32-S3


def test_targets_carry_core_clock_kernels_deadline_and_battery():
    m4 = micro.resolve("cortex_m4")
    assert (m4.core, m4.mhz, m4.kernels, m4.deadline_ms) == ("cortex-m4f", 120.0, "cmsis-nn", None)
    custom = micro.resolve({"preset": "cortex_m4", "name": "fast_m4", "deadline_ms": 5})
    assert custom.deadline_ms == 5 and custom.ram_bytes == m4.ram_bytes and custom.name == "fast_m4"
    plain = micro.resolve({"name": "b", "ram_bytes": 1 << 16, "flash_bytes": 1 << 20, "runtime": "tflm"})
    assert plain.kernels == "tflm-reference" and plain.core is None
    for bad, field in (({"core": "pentium"}, "core"), ({"kernels": "magic"}, "kernels"),
                       ({"deadline_ms": 0}, "deadline_ms"), ({"mhz": "fast"}, "mhz")):
        with pytest.raises(ValueError, match=field):
            micro.resolve({"preset": "cortex_m4", "name": "x", **bad})


def _table(profiles: dict) -> dict:
    """Three measured variants: a large fast one (DS-CNN's counts), a small slow one (ResNet-8's), a float one."""
    def row(counts, size, arena, accuracy):
        return {**counts, "size_bytes": size, "tflm_arena_bytes": arena, "litert_activation_bytes": arena,
                "val_accuracy": accuracy}

    return {"int8_fast": row(profiles["kws"], 90_000, 40_000, 0.90),
            "int8_small": row(profiles["ic"], 60_000, 40_000, 0.91),
            "float32": row({**profiles["kws"], "integer_only": 0}, 200_000, 90_000, 0.92)}


def test_each_target_gets_the_fastest_variant_that_fits_and_meets_its_deadline_not_the_smallest(anchors):
    _, profiles = anchors
    table = _table(profiles)
    allowed = {"int8_fast": 0.02, "int8_small": 0.01, "float32": 0.0}
    m4 = micro.resolve({"preset": "cortex_m4", "name": "m4", "deadline_ms": 120})
    fits = report.fit_table(table, [m4, micro.resolve("raspberry_pi")], allowed)
    cells = fits["m4"]["variants"]
    assert cells["int8_fast"]["latency_ms"] < cells["int8_small"]["latency_ms"]
    assert fits["m4"]["chosen"] == "int8_fast"  # the larger file, but the faster there
    assert cells["int8_fast"]["meets_deadline"] and "meets the 120 ms deadline" in cells["int8_fast"]["verdict"]
    assert "latency_ms" not in cells["float32"] and "no estimate" in cells["float32"]["latency"]
    # No estimate on the Linux board: the most accurate variant that fits, whatever its size.
    assert fits["raspberry_pi"]["chosen"] == "float32"
    text = report.fit_text(fits)
    assert "Estimated, not measured: latency" in text and "Measured here: flash" in text
    assert f"{cells['int8_fast']['latency_ms']:.3g} (" in text


def test_a_target_whose_deadline_no_variant_meets_gets_no_bundle_and_one_line_saying_by_how_much(anchors):
    _, profiles = anchors
    table = _table(profiles)
    tight = micro.resolve({"preset": "cortex_m4", "name": "tight", "deadline_ms": 5})
    fits = report.fit_table(table, [tight], {"int8_fast": 0.0, "int8_small": 0.0, "float32": 0.0})
    entry = fits["tight"]
    fastest = entry["variants"]["int8_fast"]
    assert entry["chosen"] is None and not fastest["meets_deadline"]
    assert "no variant meets the 5 ms deadline" in entry["why"]
    assert f"{fastest['latency_ms'] - 5:.3g} ms over" in entry["why"]
    assert f"- tight: {entry['why']}" in report.fit_text(fits)


@pytest.mark.slow
def test_the_reference_models_have_their_published_shapes():
    from models import reference

    built = {name: build() for name, build in reference.references().items()}
    assert built["kws"].input_shape == (None, 49, 10, 1) and built["kws"].output_shape == (None, 12)
    assert built["vww"].input_shape == (None, 96, 96, 3) and built["vww"].output_shape == (None, 2)
    assert built["person_detection"].input_shape == (None, 96, 96, 1)
    assert built["ic"].input_shape == (None, 32, 32, 3) and built["ic"].output_shape == (None, 10)
    assert built["ad"].input_shape == (None, 640) and built["ad"].output_shape == (None, 640)
    assert built["vww"].layers[-1].input_shape == (None, 256)  # 8 x 2^5 filters after the 13 separable blocks


@pytest.mark.slow
def test_the_stored_profile_is_what_the_reference_model_converts_to(anchors):
    from deploy import tflite
    from models import reference

    _, profiles = anchors
    model = reference.build_fc_autoencoder()
    flatbuffer = tflite.convert(model, "int8", np.random.default_rng(0).normal(size=(8, 640)).astype(np.float32))
    assert latency.profile(micro.cost(flatbuffer)) == profiles["ad"]
    assert latency.estimate(flatbuffer, micro.resolve("cortex_m7"))["ms"] == \
        pytest.approx(latency.estimate(profiles["ad"], micro.resolve("cortex_m7"))["ms"])


def test_export_logs_each_target_s_estimates_and_ranks_ties_by_the_loss(anchors):
    from pipelines.core import config as config_module
    from pipelines.training import variants

    _, profiles = anchors
    table = _table(profiles)
    settings = config_module.ExportConfig(max_accuracy_drop=0.015)
    allowed = variants.allowed(table, 0.92, settings, "val_accuracy")
    assert allowed == pytest.approx({"int8_small": 0.01, "float32": 0.0})  # int8_fast loses 0.02: out
    m4 = micro.resolve({"preset": "cortex_m4", "name": "m4", "deadline_ms": 1000})
    fits = report.fit_table(table, [m4], allowed)
    assert fits["m4"]["chosen"] == "int8_small"  # the faster one loses too much
    logged = variants.estimates(fits)
    cell = fits["m4"]["variants"]["int8_small"]
    assert logged["export/int8_small/m4/estimated_latency_ms"] == pytest.approx(cell["latency_ms"])
    assert logged["export/int8_small/m4/estimated_energy_uj"] == pytest.approx(cell["energy_uj"])
    assert logged["export/int8_small/m4/meets_deadline"] == 1
    assert not any(key.startswith("export/float32/") for key in logged)  # no estimate, nothing logged


def test_an_estimate_below_the_anchors_sizes_says_it_is_extrapolated(anchors):
    _, profiles = anchors
    m4 = micro.resolve("cortex_m4")
    assert "extrapolated" not in latency.explain(profiles["kws"], m4)[1]
    small = {**profiles["ad"], "macs": 10_000, "dot_products": 100, "op_count": 4}
    estimate, basis = latency.explain(small, m4)
    assert estimate["basis"] == basis
    assert "extrapolated: 10,000 MACs, below the smallest anchor model (264,192)" in basis
