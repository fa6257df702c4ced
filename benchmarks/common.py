"""Helpers shared by the benchmark scripts: timing generation side by side, interleaved; bootstrap intervals."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from steerlens.generation import encode, format_chat, generate_tokens
from steerlens.stats import paired_interval  # noqa: F401  (the benchmarks import it from here)

# Everyday chat prompts shared by the speed benchmarks.
PROMPTS = ["Describe your typical Monday morning.", "What do you think about rainy weather?",
           "Give me three tips for a job interview.", "Explain photosynthesis to a child.",
           "Write a short note to a neighbour about a noisy party.", "What is your favourite season and why?",
           "How do I make a cup of tea?", "Tell me about the history of bicycles."]


def tokens_per_second(model: Any, prompts: Sequence[str], contexts: dict[str, Callable[[], AbstractContextManager]],
                      max_new_tokens: int = 48, repeats: int = 3) -> dict[str, float]:
    """Greedy generation throughput per named context, measured in interleaved rounds (A B A B ...).

    Every row generates exactly ``max_new_tokens`` (no stop token) so all contexts do the same work.
    """
    tokens, mask = encode(model, [format_chat(model.tokenizer, p) for p in prompts])
    counts = {k: 0 for k in contexts}
    secs = {k: 0.0 for k in contexts}
    for _ in range(repeats):
        for name, ctx in contexts.items():
            with ctx():
                t0 = time.perf_counter()
                out = generate_tokens(model, tokens, mask, max_new_tokens=max_new_tokens, stop_token_ids=[])
                secs[name] += time.perf_counter() - t0
            counts[name] += sum(len(x) for x in out)
    return {k: counts[k] / secs[k] for k in contexts}


def unsteered() -> AbstractContextManager:
    return nullcontext()


def report_speed(tps: dict[str, float], base: str = "unsteered") -> None:
    print(f"{'setting':<28}{'tokens/s':>10}{'vs ' + base:>14}")
    for k, v in tps.items():
        print(f"{k:<28}{v:>10.1f}{v / tps[base]:>13.3f}x")


def torch_threads() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"
