"""SEA's redesign on TruthfulQA: what owns the first direction, then the paper's SEA against centred SEA, ActAdd
and an equal-size random control, under one cross-validation protocol.

Protocol (written before any of these runs):

- Data: the 419 development questions (``data/truthfulqa``). Demonstrations as ``SpectralEditor.for_task``
  builds them: question; best answer (+); one incorrect answer (-); the model's own 32-token greedy answer
  (neutral). Activations at the last token of prompt + answer, every layer (computed once, cached).
- Stage 1, diagnosis (``--diagnose``): per layer, the share of Eq. 1's energy in its first direction, uncentred
  and centred; the cosine of that direction with the neutral mean, with the attention sink's state (first
  token of a chat prompt) and with the three largest-mean dimensions; the kept ranks and whether the edit
  cancels, paper vs centred.
- Stage 2, scores: 2-fold cross-validation over three fold seeds (0, 1, 2): every question is scored by an
  editor fitted on the other half. Each setting in ``SETTINGS`` is fixed here; none is added after seeing a
  score (any that is, is listed below as added later).
- Selection rule: the SEA setting with the highest mean of MC1 and MC2 gains, averaged over the three fold
  seeds, becomes the TruthfulQA default. Reported beside it: "cross-selected" (each fold scored by the setting
  that won on the other fold, so no question scores the setting chosen on it) with a paired bootstrap
  interval over questions.

Amendment (written after fold seed 0, before seeds 1 and 2 were run): seeds 1 and 2 are run only for the
settings within 1.5 points (mean of the two gains) of the best SEA setting on seed 0, plus ActAdd and the
control. The paper's variant cancels at 5-7 of 20 layers when fitted on half the questions (as in the
cross-validation) but at 19 of 20 when fitted on all 419 (as the shipped editor is), so its cross-validated
figure describes another editor than the one shipped; so a tie (mean gains within 1 point) goes to the
setting whose all-question fit cancels at fewer layers.

Amendment 2 (written after all runs): the rule's choice, centred_k80_L8 (+4.7 MC1 / +7.7 MC2), breaks
generation: next-token drift 6.2 nats over the unsteered replies and replies such as "no no no"
(``benchmarks/sea_fluency.py``); every centred setting does. A default must keep the model writing, a
constraint this protocol did not state, so the TruthfulQA default stays the paper's variant (paper_k998,
+4.4 / +7.2, drift 0.10 nats). Only that constraint was added; no setting was rescored.

Run alone on the machine:  python benchmarks/sea_redesign.py [--diagnose] [--settings A,B] [--seeds 0,1,2]
Caches under ``$STEERLENS_CACHE/experiments/sea_redesign``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import steerlens
from steerlens.data import truthfulqa_dev_path
from steerlens.editing import ModelSpec, sink_threshold
from steerlens.generation import format_chat
from steerlens.methods.baselines import ActAdd
from steerlens.methods.sea import (
    TRUTHFULQA_NEUTRAL_TOKENS,
    SpectralEditor,
    demonstration_activations,
    spectrum_owners,
    truthfulqa_demonstrations,
)
from steerlens.stats import paired_interval
from steerlens.truthfulqa import load_truthfulqa, score_truthfulqa

N_LAYERS = 30
L20 = list(range(10, 30))
# name: (kind, layers, settings)
SETTINGS: dict[str, tuple[str, list[int], dict]] = {
    "paper_k998": ("sea", L20, {"k_pos": 0.998, "k_neg": 0.998}),
    "centred_k50": ("sea", L20, {"k_pos": 0.5, "k_neg": 0.5, "centre": True}),
    "centred_k80": ("sea", L20, {"k_pos": 0.8, "k_neg": 0.8, "centre": True}),
    "centred_k95": ("sea", L20, {"k_pos": 0.95, "k_neg": 0.95, "centre": True}),
    "centred_k99": ("sea", L20, {"k_pos": 0.99, "k_neg": 0.99, "centre": True}),
    "centred_k80_tanh": ("sea", L20, {"k_pos": 0.8, "k_neg": 0.8, "centre": True, "feature_map": "tanh"}),
    "centred_k80_L8": ("sea", list(range(22, 30)), {"k_pos": 0.8, "k_neg": 0.8, "centre": True}),
    "actadd_a05": ("actadd", L20, {"alpha": 0.05}),
    "random_a05": ("random", L20, {"alpha": 0.05}),
}


def folds(n: int, seed: int) -> list[list[int]]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [sorted(perm[: n // 2]), sorted(perm[n // 2:])]


def mean_difference_editor(model, acts, layers, alpha, random_seed=None):
    tensors = {}
    g = torch.Generator().manual_seed(random_seed or 0)
    for layer in layers:
        hp, hn = acts["positive"][layer], acts["negative"][layer]
        v = hp.mean(0) - hn.mean(0)
        if random_seed is not None:  # the equal-size random control: a random direction, the same length
            v = torch.randn(v.shape, generator=g)
        norms = torch.cat([hp, hn]).norm(dim=-1)
        tensors[f"vector.{layer}"] = v / v.norm() * norms.median()
        tensors[f"sink_norm.{layer}"] = sink_threshold(norms)
    return ActAdd(model=ModelSpec.of(model), layers=list(layers), settings={"alpha": alpha, "position": "last"},
                  tensors=tensors)


def diagnose(model, acts, out: Path) -> None:
    # the attention sink's state: the first token of a chat prompt, at every layer
    ids = model.tokenizer(format_chat(model.tokenizer, "What is the capital of France?"),
                          add_special_tokens=False, return_tensors="pt")["input_ids"]
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))
    rows = []
    print(f"{'layer':>5}{'share':>8}{'share_c':>9}{'cos_mean':>9}{'cos_sink':>9}{'cos_dims':>9}"
          f"{'k paper':>9}{'k centred':>11}{'cancel p/c':>11}")
    for layer in range(N_LAYERS):
        h, hp, hn = (acts[w][layer].float() for w in ("neutral", "positive", "negative"))
        top = h.abs().mean(0).topk(3).indices
        dims = torch.zeros(h.shape[1])
        dims[top] = h.mean(0)[top]
        refs = {"sink": cache[f"blocks.{layer}.hook_resid_post"][0, 0].float(), "dims": dims}
        own = spectrum_owners(h, hp, refs)
        spec = ModelSpec.of(model)
        ed_p = SpectralEditor.fit_activations(spec, acts, [layer], 0.998, 0.998)
        ed_c = SpectralEditor.fit_activations(spec, acts, [layer], 0.8, 0.8, centre=True)
        row = {"layer": layer, **own, "k_paper": ed_p.kept_ranks()[layer], "k_centred": ed_c.kept_ranks()[layer],
               "cancel_paper": bool(ed_p.cancelled_layers()), "cancel_centred": bool(ed_c.cancelled_layers()),
               "top_dims": top.tolist()}
        rows.append(row)
        print(f"{layer:>5}{own['first_share']:>8.4f}{own['first_share_centred']:>9.4f}{own['cos_mean']:>9.3f}"
              f"{own['cos_sink']:>9.3f}{own['cos_dims']:>9.3f}{str(row['k_paper']):>9}{str(row['k_centred']):>11}"
              f"{'yes' if row['cancel_paper'] else 'no':>6}/{'yes' if row['cancel_centred'] else 'no'}")
    (out / "diagnosis.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--diagnose", action="store_true")
    args = ap.parse_args()
    out = steerlens.cache_dir() / "experiments" / "sea_redesign"
    out.mkdir(parents=True, exist_ok=True)
    model = steerlens.load_model(verbose=False)
    rows = load_truthfulqa(truthfulqa_dev_path())
    t0 = time.perf_counter()
    demos = truthfulqa_demonstrations(rows, seed=0).with_neutral(model, max_new_tokens=TRUTHFULQA_NEUTRAL_TOKENS,
                                                                 batch_size=32)
    acts = demonstration_activations(model, demos, list(range(N_LAYERS)))
    print(f"demonstrations ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.diagnose:
        diagnose(model, acts, out)
        return

    def scores(name: str, seed: int) -> dict:
        path = out / f"scores_{name}_seed{seed}.json"
        if path.is_file():
            return json.loads(path.read_text())
        mc1, mc2 = [0.0] * len(rows), [0.0] * len(rows)
        split = folds(len(rows), seed)
        info = []
        for f in (0, 1):
            test, train = split[f], split[1 - f]
            if name == "unsteered":
                editor = None
            else:
                kind, layers, s = SETTINGS[name]
                idx = torch.tensor(train)
                a = {w: {la: acts[w][la][idx] for la in layers} for w in acts}
                if kind == "sea":
                    editor = SpectralEditor.fit_activations(ModelSpec.of(model), a, layers, **s)
                    info.append({"cancelled": len(editor.cancelled_layers()),
                                 "ranks": {k: list(v) for k, v in editor.kept_ranks().items()}})
                else:
                    editor = mean_difference_editor(model, a, layers, s["alpha"],
                                                    random_seed=seed if kind == "random" else None)
            sub = [rows[i] for i in test]
            with editor.apply(model) if editor is not None else torch.no_grad():
                res = score_truthfulqa(model, sub, progress=False)
            for j, i in enumerate(test):
                mc1[i], mc2[i] = res["per_question"]["mc1"][j], res["per_question"]["mc2"][j]
        value = {"mc1": mc1, "mc2": mc2, "info": info}
        path.write_text(json.dumps(value))
        return value

    seeds = [int(x) for x in args.seeds.split(",")]
    base = scores("unsteered", 0)  # does not depend on the split
    print(f"unsteered: MC1 {sum(base['mc1']) / len(rows):.3f}  MC2 {sum(base['mc2']) / len(rows):.3f}", flush=True)
    results: dict[str, dict[int, dict]] = {}
    for name in args.settings.split(","):
        for seed in seeds:
            t1 = time.perf_counter()
            results.setdefault(name, {})[seed] = scores(name, seed)
            r = results[name][seed]
            cancelled = [x["cancelled"] for x in r["info"]]
            print(f"{name:<20} seed {seed}: dMC1 {mean(r['mc1']) - mean(base['mc1']):+.3f}  "
                  f"dMC2 {mean(r['mc2']) - mean(base['mc2']):+.3f}  cancelled layers {cancelled}  "
                  f"({time.perf_counter() - t1:.0f} s)", flush=True)
    report(results, base, seeds, len(rows))


def mean(xs):
    return sum(xs) / len(xs)


def report(results, base, seeds, n) -> None:
    print(f"\n{'setting':<20}{'dMC1':>8}{'dMC2':>8}   (means over fold seeds {seeds}; 95% paired interval, seed 0)")
    table = {}
    for name, by_seed in results.items():
        d1 = mean([mean(r["mc1"]) - mean(base["mc1"]) for r in by_seed.values()])
        d2 = mean([mean(r["mc2"]) - mean(base["mc2"]) for r in by_seed.values()])
        r0 = by_seed[seeds[0]]
        i1 = paired_interval(base["mc1"], r0["mc1"], statistic="difference")
        i2 = paired_interval(base["mc2"], r0["mc2"], statistic="difference")
        table[name] = (d1 + d2) / 2
        print(f"{name:<20}{d1:>+8.3f}{d2:>+8.3f}   MC1 [{i1[0]:+.3f}, {i1[1]:+.3f}]  MC2 [{i2[0]:+.3f}, {i2[1]:+.3f}]")
    sea = {k: v for k, v in table.items() if SETTINGS[k][0] == "sea"}
    if sea:
        print(f"rule (best mean of the MC1 and MC2 gains over seeds): {max(sea, key=sea.get)}")
        # cross-selected on each seed's folds
        for seed in seeds:
            split = folds(n, seed)
            mc1 = mc2 = 0.0
            picked = []
            for f in (0, 1):
                other = split[1 - f]

                def gain(k, other=other, seed=seed):
                    r = results[k][seed]
                    return sum(r["mc1"][i] - base["mc1"][i] + r["mc2"][i] - base["mc2"][i] for i in other)
                best = max(sea, key=gain)
                picked.append(best)
                mc1 += sum(results[best][seed]["mc1"][i] - base["mc1"][i] for i in split[f])
                mc2 += sum(results[best][seed]["mc2"][i] - base["mc2"][i] for i in split[f])
            print(f"cross-selected, seed {seed} ({picked[0]} / {picked[1]}): dMC1 {mc1 / n:+.3f}  dMC2 {mc2 / n:+.3f}")


if __name__ == "__main__":
    main()
