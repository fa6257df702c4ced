"""RE-Control on the sentiment task: rollouts on train prompts, VADER rewards, TD value training, then an
(alpha, n) sweep on the eval prompts against the unsteered model and ActAdd. Run alone:

    python benchmarks/recontrol_sentiment.py [--samples 2] [--epochs 40]

Reported per setting: mean VADER compound of the responses, diversity, perplexity under the unsteered
model, and generation tokens/s (greedy, 48 new tokens, measured in the same run).

Figures (2 CPU cores, ``--samples 4``: 320 rollouts of the 80 training prompts; 40 eval prompts):
held-out-prompt corr(V(s_t), reward) +0.231. Unsteered VADER 0.214, perplexity 2.51. ActAdd L15 a0.3
+0.543 at perplexity 1.78x. RE-Control (dVADER @ perplexity x): a1 -0.022 @0.96, a2 -0.071 @1.01,
a4 +0.017 @1.29, a8 +0.249 @4.48, a4 |u|<=3 -0.118 @1.04, a8 |u|<=4 +0.100 @1.16, a8 |u|<=5 -0.026 @1.16.
Speed at a8 n10: 0.986x the unsteered tokens/s. The value net does not carry over to new prompts, so
below a perplexity of 1.15x no setting moves sentiment by more than the noise of 40 prompts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import report_speed, tokens_per_second, unsteered  # noqa: E402

import steerlens  # noqa: E402
from steerlens.data import contrast_pairs, data_dir, read_jsonl  # noqa: E402
from steerlens.evaluation import text_metrics  # noqa: E402
from steerlens.generation import format_chat  # noqa: E402
from steerlens.methods.recontrol import (  # noqa: E402
    Rollouts,
    ValueController,
    rollout,
    sentiment_reward,
    train_value,
)

SWEEP = ["1,10", "2,10", "4,10", "8,10", "4,10,3", "8,10,4", "8,10,5"]
MAX_NEW = 48


def split(rows):
    chat = [r["prompt"] for r in rows if "prompt" in r]
    raw = [r["prefix"] for r in rows if "prefix" in r]
    return chat, raw


def respond(model, chat, raw):
    return (steerlens.generate(model, chat, max_new_tokens=MAX_NEW, batch_size=20)
            + steerlens.generate(model, raw, max_new_tokens=MAX_NEW, chat=False, batch_size=20))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2, help="rollouts per train prompt")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--sweep", default=";".join(SWEEP), help="alpha,n[,max_norm];... (max_norm bounds ||u||)")
    ap.add_argument("--hidden", type=int, default=256)
    args = ap.parse_args()
    model = steerlens.load_model(verbose=False)
    out = steerlens.cache_dir() / "experiments" / "recontrol_sentiment"
    train_chat, train_raw = split(read_jsonl(data_dir() / "sentiment" / "train.jsonl"))
    eval_chat, eval_raw = split(read_jsonl(data_dir() / "sentiment" / "eval.jsonl"))
    contexts = [format_chat(model.tokenizer, p) for p in eval_chat] + eval_raw

    t0 = time.perf_counter()
    ro_dir = out / ("rollouts" if args.samples == 1 else f"rollouts_s{args.samples}")
    if (ro_dir / "rollouts.json").is_file():
        ro = Rollouts.load(ro_dir)
    else:
        parts = []
        for s in range(args.samples):
            parts.append(rollout(model, train_chat, MAX_NEW, chat=True, seed=100 * s, batch_size=20))
            parts.append(rollout(model, train_raw, MAX_NEW, chat=False, seed=100 * s + 50, batch_size=20))
        ro = Rollouts([p for r in parts for p in r.prompts], [x for r in parts for x in r.responses],
                      [x for r in parts for x in r.states])
        ro.rewards = list(sentiment_reward()(ro.responses))
        ro.save(ro_dir)
    r = torch.tensor(ro.rewards)
    print(f"{len(ro.states)} rollouts, {sum(len(s) for s in ro.states)} states, reward mean {r.mean():+.3f} "
          f"std {r.std():.3f} ({time.perf_counter() - t0:.0f} s)")
    vf, curves = train_value(ro, hidden=args.hidden, n_layers=2, epochs=args.epochs, lr=1e-3, progress=False)
    print(f"value training: train loss {curves['train'][0]:.4f} -> {curves['train'][-1]:.4f}, "
          f"val loss {curves['val'][0]:.4f} -> {curves['val'][-1]:.4f} (min {min(curves['val']):.4f}); "
          f"held-out prompts: corr(V(s_t), reward) {curves['val_corr'][-1]:+.3f}")

    rows = []
    base = respond(model, eval_chat, eval_raw)
    rows.append(("unsteered", text_metrics(model, contexts, base)))
    pos, neg = contrast_pairs("sentiment")
    actadd = steerlens.ActAdd.fit(model, pos, neg, layers=[15], alpha=0.3, progress=False)
    with actadd.apply(model):
        gen = respond(model, eval_chat, eval_raw)
    rows.append(("actadd L15 a0.3", text_metrics(model, contexts, gen)))
    controllers = {}
    for spec in args.sweep.split(";"):
        alpha, n, *bound = spec.split(",")
        max_norm = float(bound[0]) if bound else None
        name = f"recontrol a{alpha} n{n}" + (f" |u|<={bound[0]}" if bound else "")
        ctl = ValueController.from_value(model, vf, alpha=float(alpha), n_steps=int(n), max_norm=max_norm)
        controllers[name] = ctl
        with ctl.apply(model):
            gen = respond(model, eval_chat, eval_raw)
        rows.append((name, text_metrics(model, contexts, gen)))
        print(f"  {name}: {gen[0][:100]!r}", flush=True)

    b = rows[0][1]
    print(f"\n{'setting':<30}{'VADER':>8}{'dVADER':>8}{'diversity':>10}{'div/base':>9}{'ppl':>8}{'ppl/base':>9}")
    for name, m in rows:
        print(f"{name:<30}{m['vader_compound']:>8.3f}{m['vader_compound'] - b['vader_compound']:>+8.3f}"
              f"{m['diversity']:>10.3f}{m['diversity'] / b['diversity']:>9.3f}{m['perplexity']:>8.2f}"
              f"{m['perplexity'] / b['perplexity']:>9.3f}")
    best = max(controllers, key=lambda k: dict(rows)[k]["vader_compound"])
    contexts_speed = {"unsteered": unsteered, best: lambda: controllers[best].apply(model)}
    tps = tokens_per_second(model, eval_chat[:8], contexts_speed, max_new_tokens=MAX_NEW, repeats=2)
    report_speed(tps)


if __name__ == "__main__":
    main()
