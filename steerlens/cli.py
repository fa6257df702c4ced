"""The ``steerlens`` command: ``demo`` (the main job), ``eval``, ``bench`` and ``dictionary``."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

DEMO_PROMPTS = [
    ("chat", "Describe your typical Monday morning."),
    ("chat", "What do you think about rainy weather?"),
    ("raw", "My neighbour's dog barked all night, and honestly"),
]
POSITIVE_SYSTEM = "You are a cheerful assistant. Always answer in a warm, positive and kind way."


def demo_editors(model: Any) -> list[tuple[str, Any, str | None]]:
    """(label, editor, system prompt) for every method the demo shows, fitted on the shipped pairs."""
    from .data import contrast_pairs
    from .methods import ActAdd, OrthoProj, PromptEditor, SpectralEditor
    from .methods.sea import pair_demonstrations

    pos, neg = contrast_pairs("sentiment")
    layer = model.cfg.n_layers // 2
    sea_layers = list(range(layer, model.cfg.n_layers))
    demos = pair_demonstrations(pos, neg).with_neutral(model, max_new_tokens=16, batch_size=20, progress=False)
    return [
        ("prompt", PromptEditor.fit(model, POSITIVE_SYSTEM), POSITIVE_SYSTEM),
        (f"actadd L{layer}", ActAdd.fit(model, pos, neg, layers=[layer], progress=False), None),
        (f"orthoproj L{layer}", OrthoProj.fit(model, pos, neg, layers=[layer], progress=False), None),
        (f"sea L{layer}-{sea_layers[-1]}", SpectralEditor.fit(model, demos, layers=sea_layers, k_pos=0.99, k_neg=0.99,
                                                           progress=False), None),
    ]


def cmd_demo(args: argparse.Namespace) -> int:
    from .generation import generate
    from .models import load_model

    t0 = time.perf_counter()
    model = load_model()
    print(f"Loaded {model.cfg.model_name} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}) "
          f"in {time.perf_counter() - t0:.1f} s. Task: steer answers towards positive sentiment.\n")
    editors = demo_editors(model)

    def run(system: str | None) -> list[str]:
        out = []
        for kind, text in DEMO_PROMPTS:
            out += generate(model, [text], max_new_tokens=args.max_new_tokens, chat=kind == "chat",
                            system=system if kind == "chat" else None)
        return out

    columns: list[tuple[str, list[str]]] = [("unsteered", run(None))]
    for label, editor, system in editors:
        with editor.apply(model):
            columns.append((label, run(system)))
    for i, (kind, text) in enumerate(DEMO_PROMPTS):
        print("=" * 100)
        print(f"[{kind}] {text}")
        for label, outs in columns:
            body = textwrap.fill(" ".join(outs[i].split()), 84, initial_indent="", subsequent_indent=" " * 16)
            print(f"  {label:<13} {body}")
    print("=" * 100)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .harness import check_method, check_task, evaluate, format_result, load_items, settings_for
    from .models import load_model

    check_method(args.method)
    check_task(args.task)
    load_items(args.prompts, args.task)  # fail on bad input before loading the model
    if args.train is not None:
        load_items(args.train, args.task)
    overrides = parse_settings(args.set)
    settings_for(args.method, args.task, None, overrides)  # refuse unknown settings before loading the model
    model = load_model(verbose=False)
    result = evaluate(model, args.method, args.task, args.prompts, args.train, max_new_tokens=args.max_new_tokens,
                      settings=overrides or None)
    print(format_result(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


def parse_settings(items: list[str] | None) -> dict[str, Any]:
    """``["alpha=0.02", "positions=generated", "layers=[9,15]"]`` -> a dict; values are read as JSON
    where they parse (numbers, lists, true/false/null), otherwise kept as strings."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. --set alpha=0.02), got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    run_bench(args.out, methods=args.methods.split(","), tasks=args.tasks.split(","), limit=args.limit,
              truthfulqa_limit=args.truthfulqa_limit, max_new_tokens=args.max_new_tokens)
    return 0


def cmd_dictionary(args: argparse.Namespace) -> int:
    from .methods.pace import DEFAULT_LAYERS, default_dictionary
    from .models import load_model

    model = load_model(verbose=False)
    layers = DEFAULT_LAYERS if args.layers is None else [int(x) for x in args.layers.split(",")]
    dic = default_dictionary(model, n_concepts=args.concepts, layers=layers, stimuli=args.stimuli,
                             position=args.position)
    print(f"{len(dic.concepts)} concepts, layers {sorted(dic.atoms)}, settings {dic.settings}")
    for task, idx in dic.partitions.items():
        names = [dic.concepts[i] for i in idx]
        print(f"partition {task!r}: {len(idx)} undesirable: {', '.join(names[:30])}{' ...' if len(names) > 30 else ''}")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "demo": ("Answer the same prompts unsteered and steered by each method, side by side", cmd_demo),
    "eval": ("Evaluate one method on one task: unsteered vs steered, same prompts, JSON + table", cmd_eval),
    "bench": ("Every method x every task on the shipped evaluation sets: table, plots, JSON", cmd_bench),
    "dictionary": ("Build (or load from the cache) PaCE's concept dictionary and show its partitions",
                   cmd_dictionary),
}


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from .harness import METHODS, TASKS

    if name == "demo":
        p.add_argument("--max-new-tokens", type=int, default=40)
    elif name == "eval":
        p.add_argument("--method", required=True, help=", ".join(METHODS))
        p.add_argument("--task", required=True, help=", ".join(TASKS))
        p.add_argument("--prompts", required=True, help="JSONL (prompt/prefix) or TruthfulQA CSV to evaluate on")
        p.add_argument("--train", default=None, help="same format; default: the project's shipped data")
        p.add_argument("--max-new-tokens", type=int, default=48)
        p.add_argument("--json", default=None, help="write the result here")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one of the method's settings for the task (repeatable), e.g. "
                            "--set positions=generated --set alpha=0.02; unknown keys are refused")
    elif name == "bench":
        p.add_argument("--out", default="bench-results")
        p.add_argument("--methods", default=",".join(METHODS))
        p.add_argument("--tasks", default=",".join(TASKS))
        p.add_argument("--limit", type=int, default=None,
                       help="N prompts of each shipped eval set, spread evenly over it (both chat and raw kinds)")
        p.add_argument("--truthfulqa-limit", type=int, default=None,
                       help="first N held-out TruthfulQA questions (default: all of the held-out half)")
        p.add_argument("--max-new-tokens", type=int, default=48)
    elif name == "dictionary":
        p.add_argument("--concepts", type=int, default=None,
                       help="first N concepts: the tasks' concepts, then by frequency (default: all)")
        p.add_argument("--layers", default=None, help="comma-separated layers (default: 6,9,12,15,18,21)")
        p.add_argument("--stimuli", default="frames",
                       help="'frames' (default: the shipped frames), 'model' (the shipped model-written "
                            "sentences, data/concepts/stimuli.jsonl) or a stimuli JSONL path")
        p.add_argument("--position", choices=("last", "mean", "word"), default="last",
                       help="read each stimulus at its last token, as the mean over its tokens, or at the "
                            "concept word")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steerlens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in COMMANDS.items():
        add_arguments(name, sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except (ValueError, FileNotFoundError) as e:
        print(f"steerlens {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
