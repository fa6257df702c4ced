"""Foundation figures: first and cached load time, logit parity with HF, identity-hook overhead.

Run alone on the machine: python benchmarks/bench_foundation.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, report_speed, tokens_per_second, torch_threads, unsteered  # noqa: E402

import steerlens  # noqa: E402
from steerlens import models  # noqa: E402


def main() -> None:
    print(torch_threads())
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("STEERLENS_CACHE")
        os.environ["STEERLENS_CACHE"] = tmp
        t0 = time.perf_counter()
        steerlens.load_model(verbose=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = steerlens.load_model(verbose=False)
        second = time.perf_counter() - t0
        if old is None:
            del os.environ["STEERLENS_CACHE"]
        else:
            os.environ["STEERLENS_CACHE"] = old
        hf, tok = models.load_hf_model()
    print(f"load: first (dequantise + cache) {first:.1f} s, cached {second:.1f} s")

    worst = 0.0
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(steerlens.format_chat(tok, p), return_tensors="pt", add_special_tokens=False).input_ids
            worst = max(worst, (model(ids) - hf(ids).logits).abs().max().item())
    print(f"logit parity vs transformers: max |diff| = {worst:.2e} over {len(PROMPTS)} chat prompts")

    one = steerlens.IdentityEditor.fit(model, [15])
    every = steerlens.IdentityEditor.fit(model, list(range(model.cfg.n_layers)))
    tps = tokens_per_second(model, PROMPTS, {
        "unsteered": unsteered,
        "identity editor, 1 layer": lambda: one.apply(model),
        "identity editor, 30 layers": lambda: every.apply(model),
    }, max_new_tokens=48, repeats=3)
    print(f"greedy generation, batch {len(PROMPTS)}, 48 new tokens, KV cache, 3 interleaved rounds:")
    report_speed(tps)


if __name__ == "__main__":
    main()
