"""SEA on the bias task (BBQ-style items, ``data/bias``): settings chosen on dev, the locked test scored once.

Protocol (written before any of these runs):

- Fit on ``train.jsonl`` (336 items; demonstrations: the right answer +, the stereotyped answer (ambiguous
  items) or the other person (disambiguated) -, the model's own 16-token answer as neutral), exactly as
  ``steerlens eval --task bias`` does (``SpectralEditor.for_task`` / ``ActAdd.for_task``).
- Score every setting in ``SETTINGS`` on ``dev.jsonl`` (112 items). Rule: the SEA setting with the highest
  dev accuracy among those whose disambiguated accuracy drops by at most 2 points and whose bias scores do
  not grow in magnitude becomes the bias default; if none qualifies, the highest dev accuracy.
- ``--test``: score the unsteered model, the chosen SEA setting, ActAdd and the random control on
  ``test.jsonl`` (224 items) once, with paired bootstrap intervals over items.

Amendment (written after the locked test was scored once with the rule's choice, centred_k95: accuracy 0.290
against 0.250): centred_k95 breaks generation (next-token drift 9.6 nats, ``benchmarks/sea_fluency.py``), so
the bias default is the paper's variant, paper_k998; its locked-test figure (0.281) is a second look at the
test split and is reported as such.

Run alone:  python benchmarks/sea_bias.py [--settings A,B] [--test NAME]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import steerlens
from steerlens.bias import load_bias, score_bias
from steerlens.data import data_dir
from steerlens.editing import ModelSpec
from steerlens.methods.sea import NEUTRAL_TOKENS, SpectralEditor, demonstration_activations
from steerlens.stats import paired_interval
from steerlens.tasks import Task

L20 = list(range(10, 30))
SETTINGS: dict[str, tuple[str, list[int], dict]] = {
    "paper_k998": ("sea", L20, {"k_pos": 0.998, "k_neg": 0.998}),
    "paper_sqexp_k9999_L2": ("sea", [28, 29], {"k_pos": 0.9999, "k_neg": 0.9999, "feature_map": "sqexp"}),
    "centred_k50": ("sea", L20, {"k_pos": 0.5, "k_neg": 0.5, "centre": True}),
    "centred_k80": ("sea", L20, {"k_pos": 0.8, "k_neg": 0.8, "centre": True}),
    "centred_k95": ("sea", L20, {"k_pos": 0.95, "k_neg": 0.95, "centre": True}),
    "centred_k99": ("sea", L20, {"k_pos": 0.99, "k_neg": 0.99, "centre": True}),
    "actadd_a05": ("actadd", L20, {"alpha": 0.05}),
    "actadd_a10": ("actadd", L20, {"alpha": 0.1}),
    "random_a05": ("random", L20, {"alpha": 0.05}),
}
KEYS = ("accuracy", "accuracy_amb", "accuracy_dis", "bias_amb", "bias_dis")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--test", default=None, help="score this SEA setting, ActAdd and the control on the test split")
    args = ap.parse_args()
    out = steerlens.cache_dir() / "experiments" / "sea_bias"
    out.mkdir(parents=True, exist_ok=True)
    model = steerlens.load_model(verbose=False)
    train = load_bias(data_dir() / "bias" / "train.jsonl")
    t0 = time.perf_counter()
    demos = Task("bias", model, train).contrast_pairs().with_neutral(model, max_new_tokens=NEUTRAL_TOKENS["bias"],
                                                                     batch_size=32)
    acts = demonstration_activations(model, demos, L20)
    print(f"demonstrations ready ({time.perf_counter() - t0:.0f} s)", flush=True)

    def scored(split: str, name: str) -> dict:
        path = out / f"{split}_{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        rows = load_bias(data_dir() / "bias" / f"{split}.jsonl")
        ed = None if name == "unsteered" else build(name)
        info = {"cancelled": len(ed.cancelled_layers())} if isinstance(ed, SpectralEditor) else {}
        with ed.apply(model) if ed is not None else torch.no_grad():
            res = score_bias(model, rows, progress=False)
        value = {**res, **info}
        path.write_text(json.dumps(value))
        return value

    def build(name: str):
        kind, layers, s = SETTINGS[name]
        a = {w: {la: acts[w][la] for la in layers} for w in acts}
        if kind == "sea":
            return SpectralEditor.fit_activations(ModelSpec.of(model), a, layers, **s)
        from sea_redesign import mean_difference_editor
        return mean_difference_editor(model, a, layers, s["alpha"], random_seed=0 if kind == "random" else None)

    split = "test" if args.test else "dev"
    names = ["unsteered"] + ([args.test, "actadd_a05", "random_a05"] if args.test else args.settings.split(","))
    base = scored(split, "unsteered")
    print(f"{split}: {'setting':<22}" + "".join(f"{k:>14}" for k in KEYS) + "  cancelled")
    results = {}
    for name in names:
        r = scored(split, name)
        results[name] = r
        line = f"{split}: {name:<22}" + "".join(f"{r[k]:>14.3f}" for k in KEYS) + f"  {r.get('cancelled', '')}"
        if name != "unsteered":
            right = [float(c == row["label"]) for c, row in zip(r["per_item"]["choice"], load_bias(
                data_dir() / "bias" / f"{split}.jsonl"), strict=True)]
            base_right = [float(c == row["label"]) for c, row in zip(base["per_item"]["choice"], load_bias(
                data_dir() / "bias" / f"{split}.jsonl"), strict=True)]
            lo, hi = paired_interval(base_right, right, statistic="difference")
            line += f"  d accuracy [{lo:+.3f}, {hi:+.3f}]"
        print(line, flush=True)
    if not args.test:
        sea = [n for n in names if n in SETTINGS and SETTINGS[n][0] == "sea"]
        ok = [n for n in sea if results[n]["accuracy_dis"] >= base["accuracy_dis"] - 0.02
              and abs(results[n]["bias_amb"]) <= abs(base["bias_amb"]) + 1e-9
              and abs(results[n]["bias_dis"]) <= abs(base["bias_dis"]) + 1e-9]
        pick = max(ok or sea, key=lambda n: results[n]["accuracy"])
        print(f"rule: {pick} ({'meets' if ok else 'no setting meets'} the constraints)")


if __name__ == "__main__":
    main()
