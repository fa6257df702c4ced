"""PaCE on the detox evaluation set against ActAdd and OrthoProj, plus generation speed. Run alone:

    python benchmarks/pace_detox.py [--settings all] [--limit N] [--split train] [--no-speed]

``--split train`` scores the training prompts instead, to choose settings without looking at the
evaluation prompts.

Every method is fitted on the shipped training data only (PaCE: the dictionary and its curated partition);
scored on data/detox/eval.jsonl (20 chat requests for rude answers, 20 hostile sentence beginnings), greedy,
48 new tokens. Reported: mean offensive probability (alt-profanity-check) and perplexity of the responses
under the unsteered model, each as a ratio to the unsteered model's, overall and per kind of prompt.

Measured (2 CPU cores, evaluation prompts): default (all positions) 0.132 -> 0.068 (0.52x), perplexity
1.08x, 2.04x the unsteered time; ``positions="prompt"`` 0.064 (0.49x), perplexity 1.03x, 1.14x the time;
``positions="generated"`` 0.154 (1.17x), perplexity 0.99x. Removing the concepts from the hostile prompt
does the work; removing them from the response alone does not. Prompt-only at alpha 0.02: 0.47x,
perplexity 1.04x; prompt-only at layers 6-21: 0.49x, 1.07x (both chosen looking at these prompts). On the
mild training prompts (``--split train``, unsteered 0.039) PaCE raises offensiveness: default 1.49x,
prompt-only 1.56x.

Model-written stimuli (``data/concepts/stimuli.jsonl``, ``stimuli="model"``), evaluation prompts: read at
the concept word (``atom_position="word"``, 2 CPU cores) 0.070 (0.53x), perplexity 1.06x; prompt-only
0.067 (0.51x), 1.02x. Read as the token mean (on one H100; the frames' default and prompt-only settings
gave the same 0.52x / 0.49x there as on the CPU) 0.103 (0.78x), 1.01x; prompt-only 0.110 (0.83x), 1.00x.
So where a stimulus is read matters, and the frames and the model's own sentences, read at the concept
word, do about equally well: neither reaches 0.45x.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import report_speed, tokens_per_second, unsteered  # noqa: E402

import steerlens  # noqa: E402
from steerlens.data import data_dir  # noqa: E402
from steerlens.evaluation import mean, offensive_prob, perplexity  # noqa: E402
from steerlens.harness import contexts_of, evaluate, fit_editor, load_items, measure  # noqa: E402

SETTINGS = {
    "actadd": ("actadd", None),
    "orthoproj": ("orthoproj", None),
    "pace_default": ("pace", None),
    "pace_L15": ("pace", {"layers": [15]}),
    "pace_L6-21": ("pace", {"layers": [6, 9, 12, 15, 18, 21]}),
    "pace_a0.02": ("pace", {"alpha": 0.02}),
    "pace_generated": ("pace", {"positions": "generated"}),
    "pace_prompt": ("pace", {"positions": "prompt"}),
    "pace_prompt_a0.02": ("pace", {"positions": "prompt", "alpha": 0.02}),
    "pace_prompt_L6-21": ("pace", {"positions": "prompt", "layers": [6, 9, 12, 15, 18, 21]}),
    # the same with the model-written stimuli (data/concepts/stimuli.jsonl), read as a token mean, at the last
    # token or at the concept word
    "model": ("pace", {"stimuli": "model", "atom_position": "mean"}),
    "model_last": ("pace", {"stimuli": "model", "atom_position": "last"}),
    "model_prompt": ("pace", {"stimuli": "model", "atom_position": "mean", "positions": "prompt"}),
    "model_prompt_last": ("pace", {"stimuli": "model", "atom_position": "last", "positions": "prompt"}),
    "model_word": ("pace", {"stimuli": "model", "atom_position": "word"}),
    "model_word_prompt": ("pace", {"stimuli": "model", "atom_position": "word", "positions": "prompt"}),
    "model_a0.02": ("pace", {"stimuli": "model", "atom_position": "mean", "alpha": 0.02}),
    "model_L6-21": ("pace", {"stimuli": "model", "atom_position": "mean", "layers": [6, 9, 12, 15, 18, 21]}),
}


def by_kind(model, rows, gens):
    out = {}
    for kind in ("prompt", "prefix"):
        idx = [i for i, r in enumerate(rows) if kind in r]
        sub = [rows[i] for i in idx]
        out[kind] = (mean(offensive_prob([gens[i] for i in idx])),
                     perplexity(model, contexts_of(model, sub), [gens[i] for i in idx]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--split", choices=("eval", "train"), default="eval")
    ap.add_argument("--no-speed", action="store_true", help="skip the tokens/s measurement")
    args = ap.parse_args()
    model = steerlens.load_model(verbose=False)
    rows = load_items(data_dir() / "detox" / f"{args.split}.jsonl", "detox")[:args.limit]
    # scoring the training prompts: the other methods are fitted on the evaluation prompts instead (PaCE
    # uses no prompts at all: its dictionary and curated partition)
    other = None if args.split == "eval" else load_items(data_dir() / "detox" / "eval.jsonl", "detox")
    base = measure(model, "detox", rows, None, 48, progress=False)
    table = [("unsteered", base["metrics"], by_kind(model, rows, base["generations"]), 1.0)]
    for name in args.settings.split(","):
        method, over = SETTINGS[name]
        r = evaluate(model, method, "detox", rows, train=other, max_new_tokens=48, unsteered=base, settings=over,
                     progress=False)
        table.append((name, r["steered"], by_kind(model, rows, r["generations"]["steered"]),
                      r["seconds"]["steered"] / r["seconds"]["unsteered"]))
        print(f"{name}: {r['generations']['steered'][-1][:100]!r}", flush=True)
        b = base["metrics"]
        m = r["steered"]
        print(f"   offensive {m['offensive_prob']:.3f} ({m['offensive_prob'] / b['offensive_prob']:.2f}x) "
              f"ppl {m['perplexity']:.2f} ({m['perplexity'] / b['perplexity']:.2f}x)", flush=True)
    b = table[0][1]
    print(f"\n{'setting':<16}{'offensive':>10}{'x base':>8}{'ppl':>7}{'x base':>8}{'div':>7}"
          f"{'chat off':>10}{'raw off':>9}{'time x':>8}")
    for name, m, kinds, t in table:
        print(f"{name:<16}{m['offensive_prob']:>10.3f}{m['offensive_prob'] / b['offensive_prob']:>8.2f}"
              f"{m['perplexity']:>7.2f}{m['perplexity'] / b['perplexity']:>8.2f}{m['diversity']:>7.3f}"
              f"{kinds['prompt'][0]:>10.3f}{kinds['prefix'][0]:>9.3f}{t:>8.2f}")
    if args.no_speed:
        return
    pace = fit_editor(model, "pace", "detox", progress=False)
    chat = [r["prompt"] for r in rows if "prompt" in r][:8]
    report_speed(tokens_per_second(model, chat, {"unsteered": unsteered, "pace (default)": lambda: pace.apply(model)},
                                   max_new_tokens=48, repeats=2))


if __name__ == "__main__":
    main()
