"""Generation speed, side by side in one process: ``transformers`` ``generate`` on the same weights, steerlens'
generation on the ``HookedTransformer`` (unsteered and with each shipped method's default editor) and on the
``TransformerBridge``, and the machine's decode limit (the weights' bytes over the measured memory bandwidth,
per step, times the batch).

Every row generates exactly ``--new`` tokens (no stop token), greedy, float32, the default model; rounds are
interleaved (A B C A B C) after a warm-up, so the ratios share the machine's state. Run it alone:

    python benchmarks/generation_speed.py                  # 16 chat prompts, batch 8, 64 new tokens, 2 rounds
    python benchmarks/generation_speed.py --profile        # also: where one decoding step spends its time
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, torch_threads  # noqa: E402

import steerlens  # noqa: E402
from steerlens import models  # noqa: E402
from steerlens.generation import encode, format_chat, generate_tokens  # noqa: E402

MORE = ["Plan a picnic for four people.", "Why is the sky blue?", "Describe a busy train station.",
        "What should I pack for a weekend trip?", "Summarise the plot of a fairy tale you like.",
        "How do bees make honey?", "Give advice to someone learning to cook.", "Describe the sound of rain."]


def memory_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes per second of a large copy (read + write), the best of ``repeats``."""
    a = torch.empty(n_bytes // 4, dtype=torch.float32).normal_()
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t0)
    return 2 * n_bytes / best


def hf_runner(hf, tokens, mask, new):
    def run():  # as a user runs it (generate holds no_grad itself)
        out = hf.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                          do_sample=False, pad_token_id=hf.generation_config.pad_token_id or 2)
        return (out.shape[1] - tokens.shape[1]) * tokens.shape[0]
    return run


def steerlens_runner(model, tokens, mask, new, context=nullcontext):
    def run():
        with context():
            out = generate_tokens(model, tokens, mask, max_new_tokens=new, stop_token_ids=[])
        return sum(len(x) for x in out)
    return run


def measure(runners: dict, batches: list, rounds: int) -> dict[str, float]:
    counts = {k: 0 for k in runners}
    secs = {k: 0.0 for k in runners}
    for make in runners.values():  # warm-up, one batch each
        make(*batches[0])()
    for _ in range(rounds):
        for name, make in runners.items():
            for batch in batches:
                run = make(*batch)
                t0 = time.perf_counter()
                counts[name] += run()
                secs[name] += time.perf_counter() - t0
    return {k: counts[k] / secs[k] for k in runners}


def profile_step(model, hf, tokens, mask, new: int = 16) -> None:
    """The operators one decoding run spends its time in (torch's profiler), steerlens beside transformers."""
    from torch.profiler import ProfilerActivity, profile

    for name, run in (("steerlens (HookedTransformer)", steerlens_runner(model, tokens, mask, new)),
                      ("transformers generate", hf_runner(hf, tokens, mask, new))):
        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        print(f"\n== {name}: {new} new tokens, batch {tokens.shape[0]}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--editors", default="actadd,orthoproj,sea,pace,recontrol",
                   help="the shipped methods whose default editors (detox; sentiment for RE-Control) are timed")
    p.add_argument("--no-bridge", action="store_true")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    print(torch_threads())
    model = steerlens.load_model(verbose=False)
    hf, tok = models.load_hf_model(verbose=False)
    hf.eval()
    prompts = (PROMPTS + MORE)[:16]
    texts = [format_chat(tok, x) for x in prompts]
    batches = [encode(model, texts[i:i + args.batch]) for i in range(0, len(texts), args.batch)]

    bandwidth = memory_bandwidth()
    weights = sum(p.numel() * p.element_size() for p in hf.parameters())  # tied embedding counted once
    limit = args.batch * bandwidth / weights
    print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s; weights {weights / 2**20:.0f} MiB: decode limit "
          f"{limit:.0f} tokens/s at batch {args.batch} (one read of the weights per step)")

    if args.profile:
        profile_step(model, hf, *batches[0])

    runners = {"transformers generate": lambda t, m: hf_runner(hf, t, m, args.new),
               "steerlens, HookedTransformer": lambda t, m: steerlens_runner(model, t, m, args.new)}
    from steerlens.harness import fit_editor

    for method in [m for m in args.editors.split(",") if m]:
        task = "sentiment" if method == "recontrol" else "detox"
        editor = fit_editor(model, method, task, progress=False)
        runners[f"  + {method} ({task})"] = (lambda e: lambda t, m: steerlens_runner(
            model, t, m, args.new, lambda: e.apply(model)))(editor)
    if not args.no_bridge:
        bridge = steerlens.load_model(backend="bridge", verbose=False)
        runners["steerlens, TransformerBridge"] = lambda t, m: steerlens_runner(bridge, t, m, args.new)
    tps = measure(runners, batches, args.rounds)
    hf_tps = tps["transformers generate"]
    plain = tps["steerlens, HookedTransformer"]
    print(f"\n{len(prompts)} chat prompts, batch {args.batch}, {args.new} new tokens, greedy, float32, "
          f"{args.rounds} interleaved rounds after a warm-up")
    print("| generator | tokens/s | vs transformers | vs unsteered steerlens |\n| --- | --- | --- | --- |")
    for name, v in tps.items():
        print(f"| {name.strip()} | {v:.1f} | {v / hf_tps:.2f}x | {v / plain:.2f}x |")
    print(f"| decode limit (bandwidth) | {limit:.0f} | {limit / hf_tps:.2f}x | |")


if __name__ == "__main__":
    main()
