"""``steerlens sweep``: one method's setting swept over values on one prompt set, scored against the
unsteered model on the same prompts, drawn as a metric-vs-perplexity frontier.

Per value: the task's metric (detox: mean offensive probability; sentiment: mean VADER compound), its change
from the unsteered model with a paired 95% bootstrap interval over prompts, and the perplexity of the
responses under the unsteered model as a ratio to the unsteered responses', with its own paired interval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .editing import Editor, RandomDirectionControl
from .evaluation import offensive_prob, require_evaluators, response_nll, vader_compound
from .harness import check_method, check_task, contexts_of, fit_editor, respond, settings_for
from .settings import parse_value
from .stats import paired_interval, perplexity_ratio_interval

METRICS = {"detox": ("offensive_prob", offensive_prob), "sentiment": ("vader_compound", vader_compound)}


def parse_sweep(item: str) -> tuple[str, list[Any]]:
    """``"alpha=0.05,0.1"`` -> ``("alpha", [0.05, 0.1])``; each value read as JSON where it parses. A list
    value needs brackets: ``layers=[9],[15]``."""
    key, sep, values = item.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ValueError(f"--sweep expects KEY=V1,V2,... (e.g. --sweep alpha=0.05,0.1), got {item!r}")
    parts, depth, cur = [], 0, ""
    for ch in values:  # split on commas outside brackets
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = [parse_value(p) for p in parts]
    if len(out) < 1 or any(p == "" for p in out):
        raise ValueError(f"--sweep {item!r}: an empty value")
    return key.strip(), out


def score_responses(model: Any, task: str, contexts: Sequence[str], gens: Sequence[str]) -> dict[str, list]:
    """Per response: the task's ``metric``, the summed ``nll`` under ``model`` (unsteered) and its token
    ``count``, and the text: enough for any subset's mean, corpus perplexity and paired intervals."""
    nll, count = response_nll(model, contexts, gens)
    return {"metric": list(METRICS[task][1](gens)), "nll": nll, "count": count, "generations": list(gens)}


def run_sweep(model: Any, method: str | type[Editor] | Editor, task: str, rows: Sequence[dict], key: str,
              values: Sequence[Any], fixed: dict[str, Any] | None = None, max_new_tokens: int = 48,
              out: str | Path | None = None, progress: bool = True, control: bool = False,
              control_seed: int = 0) -> dict[str, Any]:
    """Sweep ``key`` over ``values`` (other settings: the defaults, updated by ``fixed``); returns and, with
    ``out``, writes ``sweep.json``, ``table.md`` and ``frontier.png``.

    ``method``: a name, an ``Editor`` subclass or ``module:Class`` (fitted once per value by its recipe), or a
    fitted editor, whose only sweepable key is ``"strength"`` (``editor.apply(model, strength=v)``: 0 is the
    unsteered model, 1 the fitted edit).

    ``control``: for each value, also run ``editing.RandomDirectionControl`` of that editor (the same size
    of edit at every layer and token, in a fixed random direction) and score it the same way, under
    ``row["control"]``: what the method's effect owes to its direction rather than to the perturbation."""
    cls = check_scorable([method], task, rows)[0]
    fixed = dict(fixed or {})
    fitted = method if isinstance(method, Editor) else None
    if fitted is not None:
        if key != "strength" or fixed:
            raise ValueError("A fitted editor can only be swept over 'strength'; pass its class or name to sweep "
                             f"{key!r}")
        values = [_strength(v) for v in values]
    else:
        values = [settings_for(cls, task, None, {**fixed, key: v})[key] for v in values]  # checked before any work
    contexts = contexts_of(model, rows)
    base, scored = _scoring(model, task, rows, contexts, max_new_tokens, progress)
    name = METRICS[task][0]

    table = []
    for v in values:
        label = f"{cls.method} {key}={json.dumps(v)}"
        if fitted is not None:
            editor, strength = fitted, float(v)
        else:
            editor, strength = fit_editor(model, cls, task, settings={**fixed, key: v}, progress=progress), 1.0
        row = {"value": v, **scored(editor, label, strength)}
        if control:
            row["control"] = scored(RandomDirectionControl(editor, seed=control_seed), label + " control", strength)
        table.append(row)
    result = {"method": cls.method, "task": task, "key": key, "fixed": fixed, "n": len(rows), "metric": name,
              "unsteered": {name: sum(base["metric"]) / len(rows), "scores": base}, "rows": table,
              "control": {"kind": "random-direction", "seed": control_seed} if control else None}
    if out is not None:
        write_sweep(result, out)
    return result


def _strength(v: Any) -> float:
    from .editing import check_strength

    return check_strength(v)


def check_scorable(methods: Sequence[Any], task: str, rows: Sequence[dict] | None) -> list[type[Editor]]:
    """Refuse, before any work, an unknown method or task, a task scored without generations, missing offline
    evaluators, no prompts (``rows=None``: not loaded yet); returns the methods' classes."""
    classes = [check_method(m) for m in methods]
    check_task(task)
    if task not in METRICS:
        raise ValueError(f"sweep scores generations; task {task!r} has no text metric (use detox or sentiment)")
    require_evaluators("steerlens sweep")
    if rows is not None and not rows:
        raise ValueError("The prompt set is empty")
    return classes


def _scoring(model: Any, task: str, rows: Sequence[dict], contexts: Sequence[str], max_new_tokens: int,
             progress: bool) -> tuple[dict[str, Any], Any]:
    """The unsteered scores, and a function that generates with an editor and scores it against them: the
    metric's change with a paired BCa interval, the perplexity ratio with its paired interval, the time ratio.
    A prompting editor's system prompt is used for generation; perplexity is always under the plain prompt."""
    name = METRICS[task][0]
    t0 = time.perf_counter()
    base = score_responses(model, task, contexts, respond(model, rows, max_new_tokens, progress=progress,
                                                          desc="unsteered"))
    base["seconds"] = time.perf_counter() - t0

    def scored(editor: Any, label: str = "steered", strength: float = 1.0) -> dict[str, Any]:
        t0 = time.perf_counter()
        with editor.apply(model, strength=strength):
            gens = respond(model, rows, max_new_tokens, system=getattr(editor, "system", None), progress=progress,
                           desc=label)
        seconds = time.perf_counter() - t0
        s = score_responses(model, task, contexts, gens)
        lo, hi = paired_interval(base["metric"], s["metric"], statistic="difference")
        ppl, plo, phi = perplexity_ratio_interval(base["nll"], base["count"], s["nll"], s["count"])
        mean = sum(s["metric"]) / len(rows)
        return {name: mean, "change": mean - sum(base["metric"]) / len(rows), "change_low": lo, "change_high": hi,
                "perplexity_ratio": ppl, "perplexity_low": plo, "perplexity_high": phi,
                "time_ratio": seconds / base["seconds"], "scores": s}

    return base, scored


def run_methods(model: Any, methods: Sequence[str | type[Editor] | Editor], task: str, rows: Sequence[dict],
                max_new_tokens: int = 48, out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Several methods at their defaults (``harness.fit_editor``: shipped editors load, nothing is refitted) on
    one prompt set, each scored against the unsteered model as ``run_sweep`` scores a value: the same table
    and frontier, one row per method (``key`` is ``"method"``). A method is a name, an ``Editor`` subclass,
    ``module:Class`` or a fitted editor."""
    classes = check_scorable(methods, task, rows)
    base, scored = _scoring(model, task, rows, contexts_of(model, rows), max_new_tokens, progress)
    name = METRICS[task][0]
    table = [{"value": cls.method, **scored(fit_editor(model, m, task, progress=progress), cls.method)}
             for m, cls in zip(methods, classes, strict=True)]
    result = {"method": "methods", "task": task, "key": "method", "fixed": {}, "n": len(rows), "metric": name,
              "unsteered": {name: sum(base["metric"]) / len(rows), "scores": base}, "rows": table, "control": None}
    if out is not None:
        write_sweep(result, out)
    return result


def format_table(result: dict[str, Any]) -> str:
    name, key = result["metric"], result["key"]
    lines = [f"{result['method']} on {result['task']}, {result['n']} prompts; unsteered {name} "
             f"{result['unsteered'][name]:.3f}", "",
             f"| {key} | {name} | change [95%] | perplexity ratio [95%] | time ratio |", "|---|---|---|---|---|"]

    def cells(r: dict[str, Any]) -> str:
        return (f"{r[name]:.3f} | {r['change']:+.3f} [{r['change_low']:+.3f}, {r['change_high']:+.3f}] | "
                f"{r['perplexity_ratio']:.3f} [{r['perplexity_low']:.3f}, {r['perplexity_high']:.3f}] | "
                f"{r['time_ratio']:.2f} |")
    for r in result["rows"]:
        lines.append(f"| {json.dumps(r['value'])} | {cells(r)}")
        if r.get("control"):
            lines.append(f"| {json.dumps(r['value'])}, random direction of equal size | {cells(r['control'])}")
    return "\n".join(lines)


def write_sweep(result: dict[str, Any], out: str | Path) -> Path:
    from .plotting import sweep_frontier

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result, indent=1))
    (out / "table.md").write_text(format_table(result) + "\n")
    fig = sweep_frontier(result)
    fig.savefig(out / "frontier.png", dpi=120, bbox_inches="tight")
    return out
