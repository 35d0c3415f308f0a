"""`python -m bench [name ...]`: runs benchmarks and merges their entries into bench/results.json.

Entry format: {"<benchmark>": {"figures": {"<name>": number}, "hardware": {...}, "command": "...", "date":
"..."}}; accuracies and accuracy drops are fractions (0.01 is one point). `hardware` names the CPU, its
instruction sets that matter for inference, and the cores: timings hold for that machine only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from pipelines.core import workspace

BENCHMARKS = ("pipeline", "data", "memory", "scale", "sensors", "transfer", "search", "boards", "export", "latency",
              "gan", "architectures", "tiny", "health")
RESULTS = Path(__file__).parent / "results.json"


SIMD = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
        "asimd", "asimddp", "i8mm", "sve")


def hardware() -> dict:
    """The CPU model, its SIMD instruction sets that inference kernels use, and the cores this process may use."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            if key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    except OSError:
        pass
    return {"cpu": model, "machine": platform.machine(), "cores": len(os.sched_getaffinity(0)),
            "instruction_sets": [flag for flag in SIMD if flag in flags]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*",
                        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        print(f"[bench] {name}", flush=True)
        figures = importlib.import_module(f"bench.{name}").run()
        # read again just before writing: another benchmark may have finished meanwhile in another process
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        results[name] = {"figures": figures, "hardware": hardware(), "command": f"make bench ARGS={name}",
                         "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        workspace.write_json(RESULTS, results)  # after each benchmark, so a later failure loses nothing
        print(json.dumps({name: figures}, indent=2))
    print(f"[bench] results in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
