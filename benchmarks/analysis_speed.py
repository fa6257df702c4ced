"""How long the analysis lab's views take on the default model, warm, on this machine.

Target (issue 21): `compare_edits` for all five detox editors on one 40-token prompt in at most 30 s warm on
2 CPU cores. Also timed: `divergence_trace` (24 new tokens, uncached by design) for each editor, and
`geometry_table` over ActAdd, SEA and PaCE. Each is run once to warm up, then `--repeats` times; the median
is printed. Run it alone on the machine.

    python benchmarks/analysis_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import steerlens
from steerlens.analysis import compare_edits, divergence_trace, geometry_table
from steerlens.harness import fit_editor

METHODS = ("actadd", "orthoproj", "sea", "pace", "recontrol")
# 40 tokens with the default tokenizer (checked below)
TEXT = ("Honestly, the referee is a complete and utter idiot who cannot see a foul from two metres away, and "
        "every single fan in the whole stadium truly knows it by now, so we all")


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = steerlens.load_model(verbose=False)
    editors = {m: fit_editor(model, m, "detox", progress=False) for m in METHODS}
    n = steerlens.encode(model, [TEXT])[0].shape[1]
    print(f"prompt: {n} tokens; editors: {', '.join(METHODS)}; torch threads: {__import__('torch').get_num_threads()}")
    t = timed(lambda: compare_edits(model, editors, TEXT), args.repeats)
    print(f"compare_edits, 5 editors:         {t:6.2f} s (target <= 30 s)")
    for m in ("actadd", "pace", "recontrol"):
        t = timed(lambda m=m: divergence_trace(model, editors[m], "Tell my brother he is useless.", 24), 1)
        print(f"divergence_trace, {m:<10} 24 tokens: {t:6.2f} s")
    t = timed(lambda: geometry_table([editors["actadd"], editors["sea"], editors["pace"]]), args.repeats)
    print(f"geometry_table, 3 editors:        {t:6.2f} s")


if __name__ == "__main__":
    main()
