"""RE-Control: choose the value function and the edit size on training prompts, then score once. Run alone.

    python benchmarks/recontrol_bench.py select                 # sentiment: the family x target x temperature table
    python benchmarks/recontrol_bench.py score --task sentiment # eval.jsonl and test.jsonl, 3 rollout seeds, ActAdd
    python benchmarks/recontrol_bench.py score --task detox     # holdout.jsonl, against ActAdd and PaCE

**select** (sentiment; nothing here reads eval.jsonl or test.jsonl). Rollouts on the shipped training prompts
(``train.jsonl`` + ``train_generated.jsonl``, 461 prompts x 3 samples = 1,383 rollouts of 24 tokens) at each
temperature. The prompts are split once (seeded) into a fitting part (80%) and a selection part (20%). For
every value-function family (``mlp``, ``linear``, ``pca_mlp``) x target (``td``, ``mc``) x placement
(``normalized``: before the final norm's gain; ``output``: after it, the paper's) x temperature, V is fitted
on the fitting part and measured on the selection part: corr(V(s_t), reward) and the gradient
diagnostic (``steerlens.analysis.value_gradient``: cosine of grad V with the sentiment pairs' mean difference
at the same state, and the value gain per unit edit norm). A fixed direction (V = the reference direction
itself) is measured beside them as a control.

The rule, fixed before any figure was seen:
1. Rank the 24 configurations by mean gradient cosine on the selection prompts' states (cheap, no generation).
2. For the top two, generate on the selection prompts (greedy, 48 tokens) with relative control
   (``relative=True``, 10 steps, cap ``max_norm`` = share of ||s||) at shares 0.1, 0.2, 0.3.
3. Keep the (configuration, share) with the largest VADER gain among those with perplexity <= 1.12x and
   diversity >= 0.92x the unsteered model's on the same prompts (a margin under the 1.15x / 0.9x targets).

**score** runs ``steerlens.harness.evaluate`` (what ``steerlens eval`` runs) with the defaults in
``harness.DEFAULTS`` for rollout seeds 0, 1 and 2 and reports the change with a paired bootstrap interval, then
sweeps ActAdd's alpha on the same prompts and reports its VADER gain at the highest alpha whose perplexity does
not exceed RE-Control's (matched perplexity), and tokens/s steered vs unsteered.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import paired_interval, report_speed, tokens_per_second, unsteered  # noqa: E402

import steerlens  # noqa: E402
from steerlens import harness  # noqa: E402
from steerlens.analysis import STATE_HOOK, reference_directions, value_gradient  # noqa: E402
from steerlens.data import contrast_pairs, data_dir  # noqa: E402
from steerlens.evaluation import offensive_prob, text_metrics, vader_compound  # noqa: E402
from steerlens.methods.recontrol import (  # noqa: E402
    PLACEMENTS,
    LinearValue,
    Rollouts,
    ValueController,
    final_gain,
    fit_value,
    split_by_prompt,
)

FAMILIES = ("mlp", "linear", "pca_mlp")
TARGETS = ("td", "mc")
SHARES = (0.1, 0.2, 0.3)
PPL_MAX, DIV_MIN = 1.12, 0.92
ACTADD_ALPHAS = (0.025, 0.05, 0.075, 0.1, 0.15)
MAX_NEW = 48
OUT = steerlens.cache_dir() / "experiments" / "recontrol"


def rollouts_for(model, task, temperature, seed, samples, tokens):
    s = dict(harness.settings_for("recontrol", task, model), temperature=temperature, seed=seed, samples=samples,
             rollout_tokens=tokens)
    name = f"rollouts-{task}-T{temperature}-s{seed}-n{samples}-t{tokens}"
    if (OUT / name / "rollouts.json").is_file():
        return Rollouts.load(OUT / name)
    t0 = time.perf_counter()
    t = harness.Task(task, model, harness.shipped_train_rows(task), max_new_tokens=MAX_NEW,
                     workdir=OUT / (name + ".partial"))
    ro = t.rollouts(samples=s["samples"], tokens=s["rollout_tokens"], temperature=s["temperature"], seed=s["seed"],
                    behaviours=s["behaviours"])
    ro.save(OUT / name)
    print(f"{name}: {len(ro.states)} rollouts in {time.perf_counter() - t0:.0f} s")
    return ro


def subset(ro, idx, scale):
    """The episodes ``idx``, their states times ``scale`` (the final norm's gain for the output placement)."""
    idx = [int(i) for i in idx]
    return Rollouts([ro.prompts[i] for i in idx], [ro.responses[i] for i in idx],
                    [ro.states[i] * scale for i in idx], [ro.rewards[i] for i in idx])


def corr(vf, ro):
    with torch.no_grad():
        v = torch.cat([vf(s) for s in ro.states])
    r = torch.cat([torch.full((len(s),), x) for s, x in zip(ro.states, ro.rewards, strict=True)])
    return float(torch.corrcoef(torch.stack([v, r]))[0, 1])


def metrics_of(model, rows, gens, task):
    m = text_metrics(model, harness.contexts_of(model, rows), gens)
    m["scores"] = vader_compound(gens) if task == "sentiment" else offensive_prob(gens)
    return m


def compare(base, m, key):
    lo, hi = paired_interval(base["scores"], m["scores"], "difference")
    return {"delta": m[key] - base[key], "interval": [lo, hi], "ppl_ratio": m["perplexity"] / base["perplexity"],
            "div_ratio": m["diversity"] / base["diversity"], key: m[key]}


def select(model, args):
    temps = [float(t) for t in args.temps.split(",")]
    shares = [float(x) for x in args.shares.split(",")]
    pos, neg = contrast_pairs("sentiment")
    ref = reference_directions(model, pos, neg)[STATE_HOOK]
    sets = {t: rollouts_for(model, "sentiment", t, 0, args.samples, args.rollout_tokens) for t in temps}
    prompts = sets[temps[0]].prompts
    fit_idx, sel_idx = split_by_prompt(prompts, 0.2, torch.Generator().manual_seed(1234))
    sel_prompts = sorted({prompts[int(i)] for i in sel_idx})
    table = []
    vfs = {}
    gain = final_gain(model)
    for t, ro in sets.items():
        r = torch.tensor(ro.rewards)
        same = torch.tensor([ro.rewards[i] for i in range(len(ro.prompts))]).reshape(args.samples, -1)
        within = float(same.var(0).mean() / r.var()) if same.shape[0] > 1 else float("nan")
        print(f"T={t}: {len(ro.states)} rollouts, reward mean {r.mean():+.3f} sd {r.std():.3f}; share of the "
              f"reward variance within a prompt {within:.2f}")
        configs = [(f, g, p) for p in PLACEMENTS for f in FAMILIES for g in TARGETS] + [("fixed", "-", "normalized")]
        for family, target, place in configs:
            scale = gain if place == "output" else torch.ones_like(gain)
            fit_ro, sel_ro = subset(ro, fit_idx, scale), subset(ro, sel_idx, scale)
            sel_states, reference = torch.cat(sel_ro.states), ref * scale
            t0 = time.perf_counter()
            if family == "fixed":
                vf, curves = LinearValue(ref.shape[0]), {}
                vf.weight.copy_(reference)
            else:
                vf, curves = fit_value(fit_ro, family, target, epochs=args.epochs, progress=False)
            diag = value_gradient(vf, sel_states, reference).summary()
            row = {"T": t, "family": family, "target": target, "placement": place, "val_corr": corr(vf, sel_ro),
                   **diag, "lambda": curves.get("lambda"), "fit_seconds": time.perf_counter() - t0}
            table.append(row)
            vfs[(t, family, target, place)] = vf
            print(json.dumps(row), flush=True)
    learned = [r for r in table if r["family"] != "fixed"]
    top = sorted(learned, key=lambda r: -r["cosine"])[:2]
    held = set(sel_prompts)
    rows = sorted((r for r in harness.shipped_train_rows("sentiment") if harness.item_key(r) in held),
                  key=harness.item_key)
    base = metrics_of(model, rows, harness.respond(model, rows, MAX_NEW), "sentiment")
    print(f"selection prompts: {len(rows)}; unsteered VADER {base['vader_compound']:+.3f} ppl {base['perplexity']:.2f}")
    gen_rows = []
    for cfg in top + [r for r in table if r["family"] == "fixed" and r["T"] == temps[0]]:
        vf = vfs[(cfg["T"], cfg["family"], cfg["target"], cfg["placement"])]
        for share in shares:
            ctl = ValueController.from_value(model, vf, alpha=share / 5, n_steps=10, max_norm=share, relative=True,
                                             placement=cfg["placement"])
            with ctl.apply(model):
                gens = harness.respond(model, rows, MAX_NEW)
            res = {"T": cfg["T"], "family": cfg["family"], "target": cfg["target"], "placement": cfg["placement"],
                   "share": share,
                   **compare(base, metrics_of(model, rows, gens, "sentiment"), "vader_compound")}
            gen_rows.append(res)
            print(json.dumps(res), flush=True)
    ok = [r for r in gen_rows if r["family"] != "fixed" and r["ppl_ratio"] <= PPL_MAX and r["div_ratio"] >= DIV_MIN]
    chosen = max(ok, key=lambda r: r["delta"]) if ok else None
    print("chosen:", json.dumps(chosen))
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"table": table, "generation": gen_rows, "chosen": chosen}
    (OUT / f"select{args.tag}.json").write_text(json.dumps(result, indent=1))


@torch.no_grad()
def mean_kl(model, ctx, rows, gens):
    """Mean per-token KL(steered || unsteered) of the next-token distribution over the generated tokens of
    ``gens`` (teacher-forced; ``ctx()`` applies the edit, inside ``prompt_span`` so a residual control edits the
    positions it edits in generation)."""
    from steerlens.analysis import kl_divergence
    from steerlens.editing import prompt_span
    from steerlens.generation import encode

    total, count = 0.0, 0
    for context, gen in zip(harness.contexts_of(model, rows), gens, strict=True):
        n = encode(model, [context])[0].shape[1]
        tokens, mask = encode(model, [context + gen])
        if tokens.shape[1] <= n:
            continue
        plain = model(tokens, attention_mask=mask)[0, n - 1:-1]
        with ctx(), prompt_span(n):
            steered = model(tokens, attention_mask=mask)[0, n - 1:-1]
        kl = kl_divergence(steered, plain)
        total, count = total + float(kl.sum()), count + len(kl)
    return total / max(count, 1)


def scored(model, rows, bm, key, task, ctx, label, **extra):
    """Generate under ``ctx`` and compare with the unsteered metrics ``bm``: the reward's change with a paired
    interval, the perplexity and diversity ratios and the mean per-token KL."""
    with ctx():
        gens = harness.respond(model, rows, MAX_NEW)
    row = {"label": label, **extra, **compare(bm, metrics_of(model, rows, gens, task), key),
           "kl": mean_kl(model, ctx, rows, gens)}
    print(label, json.dumps(row), flush=True)
    return row


def controller_at(model, vf, share, placement, layer):
    """A relative controller of ``share`` x |s| (10 steps of share / 5, capped at share)."""
    positions = "last" if placement == "resid" else "all"  # "all": teacher-forced KL of a final-state edit
    return ValueController.from_value(model, vf, alpha=share / 5, n_steps=10, max_norm=share, relative=True,
                                      placement=placement, layer=layer, positions=positions)


def score(model, args):
    """The shipped default over 3 rollout seeds, then the frontier on the same prompts (seed 0): RE-Control at
    both placements over the control's size, ActAdd at the same layer (and at its default layer 15) over alpha,
    and the equal-size random direction; reward change against perplexity and against per-token KL."""
    task = args.task
    files = {"sentiment": ["eval.jsonl", "test.jsonl"], "detox": ["holdout.jsonl"]}[task]
    key = "vader_compound" if task == "sentiment" else "offensive_prob"
    defaults = harness.settings_for("recontrol", task, model)
    layer, share = defaults["layer"], defaults["max_norm"]
    results = {"defaults": defaults}
    for name in files:
        rows = harness.load_items(data_dir() / task / name, task)
        base = harness.measure(model, task, rows, None, MAX_NEW, progress=False)
        bm = metrics_of(model, rows, base["generations"], task)
        out = {"n": len(rows), "unsteered": {k: v for k, v in bm.items() if k != "scores"}, "recontrol": [],
               "frontier": [], "pace": None}
        for seed in [int(x) for x in args.seeds.split(",")]:
            res = harness.evaluate(model, "recontrol", task, rows, settings={"seed": seed}, max_new_tokens=MAX_NEW,
                                   unsteered=base, progress=False)
            m = metrics_of(model, rows, res["generations"]["steered"], task)
            row = {"seed": seed, **compare(bm, m, key), "seconds": res["seconds"]}
            out["recontrol"].append(row)
            print(name, "recontrol", json.dumps(row), flush=True)
        d = out["recontrol"]
        out["recontrol_mean"] = {k: sum(r[k] for r in d) / len(d) for k in ("delta", "ppl_ratio", "div_ratio")}
        print(name, "RE-Control over seeds", json.dumps(out["recontrol_mean"]), flush=True)
        fr = out["frontier"]
        editor = harness.fit_editor(model, "recontrol", task, progress=False)
        vf = editor.value_function()
        for k in (0.5, 1.0, 1.5, 2.0):
            ctl = controller_at(model, vf, k * share, defaults["placement"], layer)
            fr.append(scored(model, rows, bm, key, task, lambda c=ctl: c.apply(model), "recontrol-resid",
                             size=k * share))
        from steerlens.editing import RandomDirectionControl

        rnd = RandomDirectionControl(editor, seed=0)
        fr.append(scored(model, rows, bm, key, task, lambda r=rnd: r.apply(model), "random-direction", size=share))
        final = harness.fit_editor(model, "recontrol", task, settings={"placement": "normalized", "layer": None},
                                   progress=False)
        for size in (0.125, 0.25, 0.375):
            ctl = controller_at(model, final.value_function(), size, "normalized", None)
            fr.append(scored(model, rows, bm, key, task, lambda c=ctl: c.apply(model), "recontrol-final",
                             size=size))
        for at in dict.fromkeys((layer, 15)):
            actadd = harness.fit_editor(model, "actadd", task, settings={"layers": [at]}, progress=False)
            for alpha in [float(a) for a in args.alphas.split(",")]:
                actadd.settings["alpha"] = alpha
                fr.append(scored(model, rows, bm, key, task, lambda a=actadd: a.apply(model), f"actadd-L{at}",
                                 size=alpha))
        if task == "detox":
            res = harness.evaluate(model, "pace", task, rows, max_new_tokens=MAX_NEW, unsteered=base, progress=False)
            out["pace"] = compare(bm, metrics_of(model, rows, res["generations"]["steered"], task), key)
            print(name, "pace", json.dumps(out["pace"]), flush=True)
        ppl = out["recontrol_mean"]["ppl_ratio"]
        for label in dict.fromkeys(f"actadd-L{at}" for at in (layer, 15)):
            matched = [r for r in fr if r["label"] == label and r["ppl_ratio"] <= ppl]
            out[f"{label}_matched"] = max(matched, key=lambda r: r["size"]) if matched else None
            print(name, label, "at RE-Control's perplexity", ppl, json.dumps(out[f"{label}_matched"]), flush=True)
        results[name] = out
    chat = [r["prompt"] for r in harness.load_items(data_dir() / task / files[0], task) if "prompt" in r][:8]
    tps = tokens_per_second(model, chat, {"unsteered": unsteered, "recontrol": lambda: editor.apply(model)},
                            max_new_tokens=MAX_NEW, repeats=3)
    report_speed(tps)
    results["tokens_per_second"] = tps
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"score-{task}.json").write_text(json.dumps(results, indent=1))
    plot_frontier(results, files, key, OUT / f"frontier-{task}.png")


def plot_frontier(results, files, key, path):
    """Reward change against perplexity ratio and against mean per-token KL, one panel pair per prompt file;
    each method's sizes joined in order of size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(files), 2, figsize=(10, 4 * len(files)), squeeze=False)
    for row_axes, name in zip(axes, files, strict=True):
        fr = results[name]["frontier"]
        for label in dict.fromkeys(r["label"] for r in fr):
            pts = sorted((r for r in fr if r["label"] == label), key=lambda r: r["size"])
            for ax, x in zip(row_axes, ("ppl_ratio", "kl"), strict=True):
                ax.plot([r[x] for r in pts], [r["delta"] for r in pts], "o-" if len(pts) > 1 else "s", label=label)
        for ax, x in zip(row_axes, ("perplexity ratio (steered / unsteered)", "mean per-token KL to unsteered (nats)"),
                         strict=True):
            ax.set_xlabel(x)
            ax.set_ylabel(f"change in {key}")
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_title(f"{name} ({results[name]['n']} prompts)")
        row_axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("frontier plot:", path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["select", "score"])
    ap.add_argument("--task", default="sentiment", choices=["sentiment", "detox"])
    ap.add_argument("--temps", default="1.0,0.6")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--rollout-tokens", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--alphas", default=",".join(map(str, ACTADD_ALPHAS)), help="ActAdd's alphas in score")
    ap.add_argument("--shares", default=",".join(map(str, SHARES)), help="edit sizes tried in select (x ||s||)")
    ap.add_argument("--tag", default="", help="suffix of select's output file")
    args = ap.parse_args()
    model = steerlens.load_model(verbose=False)
    (select if args.phase == "select" else score)(model, args)


if __name__ == "__main__":
    main()
