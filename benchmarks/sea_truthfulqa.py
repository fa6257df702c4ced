"""SEA on TruthfulQA (development split), 2-fold cross-validated, against the unsteered model and ActAdd.

Protocol: the 419 development questions are split into two seeded folds. For every setting, an editor
is fitted on one fold's demonstrations (question; best answer +; one incorrect answer -; the model's
own greedy answer as neutral) and scores MC1/MC2 on the other fold, so each question is scored by an
editor that never saw it. "cross-selected" reports, for each fold, the setting chosen by its score on
the *other* fold (no selection on the questions being reported).

Expensive stages (neutral answers, activations at all layers, per-setting scores) are cached under
``$STEERLENS_CACHE/experiments/sea_truthfulqa`` so the script resumes where it stopped.
Run alone on the machine:  python benchmarks/sea_truthfulqa.py [--settings A,B,...] [--fold-seed N]

Measured (SmolLM2-135M-Instruct, 419 questions; unsteered MC1 0.222, MC2 0.420): the chosen setting
sea_L20_998 (layers 10-29, K = 99.8%) gives dMC1 / dMC2 of +0.045 / +0.065 on split 0, +0.055 / +0.086
on split 1 and +0.031 / +0.065 on split 2 (``--fold-seed``), so +0.044 / +0.072 on average; the six
half-set editors range from -0.014 to +0.114 in MC1. K = 99.95%: +0.002 / +0.061; K = 99.99%:
+0.029 / +0.052 (split 0).
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
from steerlens.methods.baselines import ActAdd
from steerlens.methods.sea import TRUTHFULQA_NEUTRAL_TOKENS, SpectralEditor, truthfulqa_demonstrations
from steerlens.truthfulqa import load_truthfulqa, score_truthfulqa

N_LAYERS = 30
SETTINGS = {  # name: (method, first layer, k_pos, k_neg, feature map / alpha[, demonstrations])
    "sea_L20_998": ("sea", 10, 0.998, 0.998, "linear"),
    "sea_L8_998": ("sea", 22, 0.998, 0.998, "linear"),
    "sea_L20_99": ("sea", 10, 0.99, 0.99, "linear"),
    "sea_L20_9995": ("sea", 10, 0.9995, 0.9995, "linear"),
    "sea_L20_9999": ("sea", 10, 0.9999, 0.9999, "linear"),
    "sea_L20_999_tanh": ("sea", 10, 0.999, 0.999, "tanh"),
    "sea_L4_99": ("sea", 26, 0.99, 0.99, "linear"),
    "sea_L20_998_all": ("sea", 10, 0.998, 0.998, "linear", "all"),
    "sea_L20_99_all": ("sea", 10, 0.99, 0.99, "linear", "all"),
    "actadd_L20_a05": ("actadd", 10, None, None, 0.05),
    "actadd_L8_a1": ("actadd", 22, None, None, 0.1),
}


def folds(n: int, seed: int = 0) -> list[list[int]]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [sorted(perm[: n // 2]), sorted(perm[n // 2:])]


def cached_json(path: Path, make):
    if path.is_file():
        return json.loads(path.read_text())
    value = make()
    path.write_text(json.dumps(value))
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--fold-seed", type=int, default=0,
                    help="seed of the 2-fold split (repeat the cross-validation on other splits)")
    args = ap.parse_args()
    out = steerlens.cache_dir() / "experiments" / "sea_truthfulqa"
    out.mkdir(parents=True, exist_ok=True)
    model = steerlens.load_model(verbose=False)
    rows = load_truthfulqa(truthfulqa_dev_path())
    demos = truthfulqa_demonstrations(rows, seed=0)
    split = folds(len(rows), args.fold_seed)

    t0 = time.perf_counter()
    neutral = cached_json(out / "neutral.json",
                          lambda: demos.with_neutral(model, max_new_tokens=TRUTHFULQA_NEUTRAL_TOKENS,
                                                     batch_size=32).neutral)
    demos.neutral = neutral
    print(f"neutral answers ready ({time.perf_counter() - t0:.0f} s)", flush=True)

    acts_path = out / "acts.pt"
    if acts_path.is_file():
        acts = torch.load(acts_path)
    else:
        from steerlens.methods.sea import demonstration_activations
        acts = demonstration_activations(model, demos, list(range(N_LAYERS)), batch_size=16)
        torch.save(acts, acts_path)
    print(f"activations ready ({time.perf_counter() - t0:.0f} s)", flush=True)

    # "all" demonstrations: every correct and incorrect answer; neutral activations reused per question
    counts = [len(truthfulqa_demonstrations([r], answers="all").prompts) for r in rows]
    question_of = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(counts))
    all_acts: dict = {}

    def acts_for(demos_kind: str):
        if demos_kind == "best":
            return acts, torch.arange(len(rows))
        if not all_acts:
            path = out / "acts_all.pt"
            if path.is_file():
                all_acts.update(torch.load(path))
            else:
                from steerlens.methods.sea import demonstration_activations
                d = truthfulqa_demonstrations(rows, answers="all")
                d.neutral = [neutral[int(q)] for q in question_of]
                t1 = time.perf_counter()
                all_acts.update(demonstration_activations(model, d, list(range(N_LAYERS)), batch_size=16))
                torch.save(all_acts, path)
                print(f"all-answer activations: {len(d.prompts)} demonstrations ({time.perf_counter() - t1:.0f} s)",
                      flush=True)
        return all_acts, question_of

    def score(name: str, make_editor) -> dict:
        # the unsteered scores do not depend on the split
        seeded = name != "unsteered" and args.fold_seed != 0
        path = out / (f"scores_{name}_fold{args.fold_seed}.json" if seeded else f"scores_{name}.json")
        if path.is_file():
            return json.loads(path.read_text())
        mc1, mc2, ranks = [0.0] * len(rows), [0.0] * len(rows), []
        for f in (0, 1):
            test, train = split[f], split[1 - f]
            editor = make_editor(train)
            ranks.append(editor.kept_ranks() if hasattr(editor, "kept_ranks") else None)
            sub = [rows[i] for i in test]
            ctx = editor.apply(model) if editor is not None else torch.no_grad()
            with ctx:
                res = score_truthfulqa(model, sub, progress=False)
            for j, i in enumerate(test):
                mc1[i], mc2[i] = res["per_question"]["mc1"][j], res["per_question"]["mc2"][j]
        value = {"mc1": mc1, "mc2": mc2, "ranks": str(ranks)}
        path.write_text(json.dumps(value))
        return value

    def make(name: str):
        method, first, kp, kn, extra, *rest = SETTINGS[name]
        layers = list(range(first, N_LAYERS))

        def build(train):
            source, question = acts_for(rest[0] if rest else "best")
            idx = torch.isin(question, torch.tensor(train)).nonzero().squeeze(1)
            a = {w: {layer: source[w][layer][idx] for layer in layers} for w in source}
            if method == "sea":
                return SpectralEditor.fit_activations(ModelSpec.of(model), a, layers, kp, kn, extra)
            tensors = {}
            for layer in layers:
                hp, hn = a["positive"][layer], a["negative"][layer]
                v = hp.mean(0) - hn.mean(0)
                norms = torch.cat([hp, hn]).norm(dim=-1)
                tensors[f"vector.{layer}"] = v / v.norm() * norms.median()
                tensors[f"sink_norm.{layer}"] = sink_threshold(norms)
            return ActAdd(model=ModelSpec.of(model), layers=layers, settings={"alpha": extra, "position": "last"},
                          tensors=tensors)
        return build

    results = {"unsteered": score("unsteered", lambda train: None)}
    print(f"unsteered scored ({time.perf_counter() - t0:.0f} s)", flush=True)
    report(results, split)
    for name in args.settings.split(","):
        t1 = time.perf_counter()
        results[name] = score(name, make(name))
        print(f"{name} scored in {time.perf_counter() - t1:.0f} s", flush=True)
        report(results, split)


def report(results: dict, split: list[list[int]]) -> None:
    def mean(xs, idx=None):
        idx = range(len(xs)) if idx is None else idx
        return sum(xs[i] for i in idx) / len(idx)

    base = results["unsteered"]
    print(f"\n{'setting':<22}{'MC1':>8}{'MC2':>8}{'dMC1':>8}{'dMC2':>8}   fold MC1 (0/1)")
    for name, r in results.items():
        f = [mean(r["mc1"], s) for s in split]
        print(f"{name:<22}{mean(r['mc1']):>8.3f}{mean(r['mc2']):>8.3f}{mean(r['mc1']) - mean(base['mc1']):>+8.3f}"
              f"{mean(r['mc2']) - mean(base['mc2']):>+8.3f}   {f[0]:.3f}/{f[1]:.3f}")
    sea = {k: v for k, v in results.items() if k.startswith("sea")}
    if sea:
        picked, mc1, mc2 = [], 0.0, 0.0
        for f in (0, 1):
            other = split[1 - f]
            best = max(sea, key=lambda k: mean(sea[k]["mc1"], other))
            picked.append(best)
            mc1 += sum(sea[best]["mc1"][i] for i in split[f])
            mc2 += sum(sea[best]["mc2"][i] for i in split[f])
        n = sum(len(s) for s in split)
        print(f"cross-selected SEA (fold0<-{picked[0]}, fold1<-{picked[1]}): MC1 {mc1 / n:.3f} "
              f"(d {mc1 / n - mean(base['mc1']):+.3f}), MC2 {mc2 / n:.3f} (d {mc2 / n - mean(base['mc2']):+.3f})")
    print(flush=True)


if __name__ == "__main__":
    main()
