"""Generation overhead of each editor: greedy tokens/s steered vs unsteered, interleaved in one run.

SEA is fitted on the shipped sentiment pairs at the last 4 layers and at all 30; RE-Control uses an
untrained value net of the default shape (the cost does not depend on its weights). Run alone:

    python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, report_speed, tokens_per_second, torch_threads, unsteered  # noqa: E402

import steerlens  # noqa: E402
from steerlens.data import contrast_pairs  # noqa: E402
from steerlens.methods.recontrol import MLPValue, ValueController  # noqa: E402
from steerlens.methods.sea import SpectralEditor, pair_demonstrations  # noqa: E402


def main() -> None:
    print(torch_threads())
    model = steerlens.load_model(verbose=False)
    n = model.cfg.n_layers
    pos, neg = contrast_pairs("sentiment")
    demos = pair_demonstrations(pos, neg).with_neutral(model, max_new_tokens=16, batch_size=20, progress=False)
    sea4 = SpectralEditor.fit(model, demos, layers=range(n - 4, n), progress=False)
    sea_all = SpectralEditor.fit(model, demos, layers=range(n), progress=False)
    actadd = steerlens.ActAdd.fit(model, pos, neg, layers=[15], progress=False)
    ctl = ValueController.from_value(model, MLPValue(model.cfg.d_model, 256, 2), alpha=1.0, n_steps=10)
    print("SEA kept/removed ranks, last layer:", sea4.kept_ranks()[n - 1])
    tps = tokens_per_second(model, PROMPTS, {
        "unsteered": unsteered,
        "actadd, 1 layer": lambda: actadd.apply(model),
        "sea, last 4 layers": lambda: sea4.apply(model),
        f"sea, all {n} layers": lambda: sea_all.apply(model),
        "recontrol, n=10": lambda: ctl.apply(model),
    }, max_new_tokens=48, repeats=3)
    print(f"greedy generation, batch {len(PROMPTS)}, 48 new tokens, KV cache, 3 interleaved rounds:")
    report_speed(tps)


if __name__ == "__main__":
    main()
