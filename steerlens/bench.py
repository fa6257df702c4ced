"""``steerlens bench``: every method x every task on the shipped evaluation sets, in one folder.

Detox and sentiment: ``data/<task>/eval.jsonl``, methods fitted on the shipped training data. TruthfulQA:
the shipped development split (``data/truthfulqa``) is split in two halves by a seeded permutation; methods are
fitted on one half and scored on the other. The unsteered model is measured once per task and shared by
all methods. Writes ``results.json`` (every result, generations included), ``table.md`` and one plot per
task (change in the task's metric vs generation/scoring time relative to the unsteered model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .data import data_dir, truthfulqa_dev_path
from .harness import TASKS, check_method, check_task, evaluate, load_items, measure, task_metrics
from .harness import methods as all_methods

PRIMARY = {"detox": "offensive_prob", "sentiment": "vader_compound", "truthfulqa": "mc1", "bias": "accuracy"}


def truthfulqa_halves(seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(fit half, held-out half) of the development split, by a seeded permutation."""
    rows = load_items(truthfulqa_dev_path(), "truthfulqa")
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    half = len(rows) // 2
    return [rows[i] for i in perm[:half]], [rows[i] for i in perm[half:]]


def spread(rows: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` items spread evenly over ``rows`` (in order), so a subset keeps every kind of item (the
    shipped sets hold chat prompts first, then raw prefixes); all of them when ``limit`` is None."""
    rows = list(rows)
    if limit is None or limit >= len(rows):
        return rows
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return [rows[i * len(rows) // limit] for i in range(limit)]


def tokens_per_second(model: Any, generations: Sequence[str], seconds: float) -> float:
    """Generated tokens (the responses re-tokenised) per second of generation."""
    n = sum(len(model.tokenizer(g, add_special_tokens=False)["input_ids"]) for g in generations)
    return n / max(seconds, 1e-9)


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    lines = []
    for task in TASKS:
        rs = [r for r in results if r["task"] == task]
        if not rs:
            continue
        keys = list(task_metrics(task))
        lines += [f"### {task} ({rs[0]['n']} items)", "",
                  "| method | " + " | ".join(keys) + " | time vs unsteered | tokens/s |",
                  "| --- " * (len(keys) + 3) + "|",
                  "| unsteered | " + " | ".join(f"{rs[0]['unsteered'][k]:.3f}" for k in keys)
                  + f" | 1.00x | {_speed(rs[0], 'unsteered')} |"]
        for r in rs:
            ratio = r["seconds"]["steered"] / max(r["seconds"]["unsteered"], 1e-9)
            lines.append(f"| {r['method']} | " + " | ".join(f"{r['steered'][k]:.3f}" for k in keys)
                         + f" | {ratio:.2f}x | {_speed(r, 'steered')} |")
        lines.append("")
    return "\n".join(lines)


def _speed(result: dict[str, Any], which: str) -> str:
    tps = result.get("tokens_per_second", {}).get(which)
    return "" if tps is None else f"{tps:.1f}"


def run_bench(out: str | Path, methods: Sequence[Any] | None = None, tasks: Sequence[str] = TASKS,
              limit: int | None = None, truthfulqa_limit: int | None = None, max_new_tokens: int = 48,
              model: Any | None = None, settings: dict[str, dict[str, Any]] | None = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Run the grid; ``methods``: names, ``Editor`` subclasses or ``module:Class`` (default: every registered
    method); ``settings`` maps a method's name to overrides of its defaults (e.g. a smaller dictionary for a
    quick run). Returns the list of ``evaluate`` results."""
    from .models import load_model
    from .plotting import bench_tradeoff

    chosen = list(all_methods() if methods is None else methods)
    names = [check_method(m).method for m in chosen]
    for t in tasks:
        check_task(t)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model or load_model(verbose=False)
    results: list[dict[str, Any]] = []
    for task in tasks:
        if task == "truthfulqa":
            train, rows = truthfulqa_halves()
            rows = rows[:truthfulqa_limit]
        else:  # bias items: the development split (the test split is locked)
            evaluated = "dev.jsonl" if task == "bias" else "eval.jsonl"
            train, rows = None, spread(load_items(data_dir() / task / evaluated, task), limit)
        print(f"== {task}: {len(rows)} items; unsteered", flush=True)
        base = measure(model, task, rows, None, max_new_tokens, progress=progress)
        if base["generations"]:
            print(f"   generation: {tokens_per_second(model, base['generations'], base['seconds']):.1f} tokens/s "
                  "unsteered (benchmarks/generation_speed.py compares it with transformers)", flush=True)
        for method, name in zip(chosen, names, strict=True):
            supported = check_method(method).tasks
            if supported is not None and task not in supported:
                print(f"== {task}: {name} has no recipe for this task; skipped", flush=True)
                continue
            print(f"== {task}: {name}", flush=True)
            r = evaluate(model, method, task, rows, train, max_new_tokens=max_new_tokens, unsteered=base,
                         settings=(settings or {}).get(name), progress=progress)
            if r["generations"]["steered"]:
                r["tokens_per_second"] = {w: tokens_per_second(model, r["generations"][w], r["seconds"][w])
                                          for w in ("unsteered", "steered")}
            results.append(r)
            print(f"   {PRIMARY[task]}: {r['unsteered'][PRIMARY[task]]:.3f} -> {r['steered'][PRIMARY[task]]:.3f}",
                  flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))
        fig = bench_tradeoff([r for r in results if r["task"] == task], PRIMARY[task])
        fig.savefig(out / f"{task}.png", dpi=120, bbox_inches="tight")
    (out / "table.md").write_text(markdown_table(results))
    print(markdown_table(results))
    print(f"wrote {out}/results.json, table.md and one plot per task")
    return results
