"""`python -m pipelines.stages targets|help`: the registry for the Makefile (standard library only).

`targets` prints `make-target:stage` pairs; `help` prints one line per stage for `make help`.
"""

import sys

from pipelines.stages import STAGES

if __name__ == "__main__":
    if sys.argv[1:] == ["targets"]:
        print(" ".join(f"{stage.make_target}:{stage.name}" for stage in STAGES))
    elif sys.argv[1:] == ["help"]:
        for stage in STAGES:
            note = "" if stage.in_all else " (not in 'all')"
            print(f"  {stage.make_target:22s} {stage.description}{note}")
    else:
        sys.exit("usage: python -m pipelines.stages targets|help")
