"""The ``steerlens`` command: ``demo`` (the main job), ``eval``, ``sweep``, ``bench``, ``methods`` and ``dictionary``.

Every check that can fail on the user's input (the method, the task, the prompt files, the settings, the
optional evaluators) runs before the model loads; a refusal is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any


def cmd_demo(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .demo import format_demo, run_demo
    from .models import load_model

    t0 = time.perf_counter()
    model = load_model()
    print(f"Loaded {model.cfg.model_name} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}) "
          f"in {time.perf_counter() - t0:.1f} s.", file=sys.stderr)
    result = run_demo(model, tasks=_list(args.task), methods=_list(args.method), prompt=args.prompt,
                      max_new_tokens=args.max_new_tokens, progress=not args.quiet)
    result["seconds"]["total"] = time.perf_counter() - t0
    print(format_demo(result))
    fit = sum(result["seconds"]["fit"].values())
    print(f"{result['seconds']['total']:.0f} s in all: fitting or loading editors {fit:.0f} s, generating "
          f"{result['seconds']['generate']:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


def _list(value: str | None) -> list[str] | None:
    return None if value is None else [x.strip() for x in value.split(",") if x.strip()]


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .evaluation import require_evaluators
    from .harness import TEXT_TASKS, check_method, check_task, evaluate, format_result, load_items, settings_for
    from .models import load_model

    method = check_method(args.method)
    check_task(args.task)
    if args.task in TEXT_TASKS:
        require_evaluators(f"steerlens eval --task {args.task}")
    load_items(args.prompts, args.task)  # fail on bad input before loading the model
    if args.train is not None:
        load_items(args.train, args.task)
    overrides = parse_settings(args.set)
    settings_for(method, args.task, None, overrides)  # refuse bad settings before loading the model
    model = load_model(verbose=False)
    result = evaluate(model, method, args.task, args.prompts, args.train, max_new_tokens=args.max_new_tokens,
                      settings=overrides or None, progress=not args.quiet)
    print(format_result(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


def parse_settings(items: list[str] | None) -> dict[str, Any]:
    """``["alpha=0.02", "positions=generated", "layers=[9,15]"]`` -> a dict; values are read as JSON
    where they parse (numbers, lists, true/false/null), otherwise kept as strings. The method's declaration
    then checks them (``settings.check_settings``): ``alpha=abc`` is refused there, not here."""
    from .settings import parse_value

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. --set alpha=0.02), got {item!r}")
        if key.strip() in out:
            raise ValueError(f"--set {key.strip()} is given twice")
        out[key.strip()] = parse_value(value)
    return out


def cmd_sweep(args: argparse.Namespace) -> int:
    from .harness import load_items, settings_for
    from .models import load_model
    from .sweep import check_scorable, format_table, parse_sweep, run_sweep

    method = check_scorable([args.method], args.task, None)[0]
    rows = load_items(args.prompts, args.task)  # refuses an empty file
    key, values = parse_sweep(args.sweep)
    fixed = parse_settings(args.set)
    for v in values:  # refuse bad settings before loading the model
        settings_for(method, args.task, None, {**fixed, key: v})
    model = load_model(verbose=False)
    result = run_sweep(model, method, args.task, rows[:args.limit], key, values, fixed,
                       max_new_tokens=args.max_new_tokens, out=args.out, control=args.control,
                       progress=not args.quiet)
    print(format_table(result))
    print(f"wrote {args.out}/sweep.json, table.md and frontier.png")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench
    from .evaluation import require_evaluators
    from .harness import TEXT_TASKS, check_method, check_task, methods

    chosen = methods() if args.methods is None else _list(args.methods)
    tasks = _list(args.tasks) or []
    for m in chosen or []:
        check_method(m)
    for t in tasks:
        check_task(t)
    if set(tasks) & set(TEXT_TASKS):
        require_evaluators("steerlens bench")
    run_bench(args.out, methods=chosen, tasks=tasks, limit=args.limit,
              truthfulqa_limit=args.truthfulqa_limit, max_new_tokens=args.max_new_tokens, progress=not args.quiet)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .editing import resolve_method
    from .harness import TASKS, methods
    from .settings import describe

    for name in [args.method] if args.method else methods():
        cls = resolve_method(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{cls.method}  ({cls.__module__}.{cls.__qualname__}){': ' + doc if doc else ''}")
        tasks = cls.tasks or TASKS
        if cls.settings_spec is None:
            print("  (no declared settings)")
        for task in tasks if args.method else tasks[:1]:
            table = describe(cls.settings_spec or (), cls.task_settings(task))
            if table:
                print(f" settings for {task} (name, default, what it does (allowed values)):" if args.method else
                      f" settings (name, default for {task}, what it does (allowed values)):")
                print(table)
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
    "demo": ("Every method on the task it is meant for, unsteered beside steered, with how each edit worked",
             cmd_demo),
    "eval": ("Evaluate one method on one task: unsteered vs steered, same prompts, JSON + table", cmd_eval),
    "sweep": ("Sweep one setting of one method: metric and perplexity per value, paired intervals, a frontier plot",
              cmd_sweep),
    "bench": ("Every method x every task on the shipped evaluation sets: table, plots, JSON", cmd_bench),
    "methods": ("List the methods (shipped, installed through entry points, or --method module:Class) and their "
                "declared settings", cmd_methods),
    "dictionary": ("Build (or load from the cache) PaCE's concept dictionary and show its partitions",
                   cmd_dictionary),
}


METHOD_HELP = ("a registered method ({names}), or your own Editor subclass as module:Class (a module on the path) "
               "or path/to/file.py:Class")
QUIET_HELP = "no progress bars"


def item_file(value: str) -> str:
    """An input file argument. A path under ``data/`` that does not exist here names the copy shipped in the
    package, so the README's ``--prompts data/detox/eval.jsonl`` works from any folder."""
    from pathlib import Path

    from .data import data_dir

    path = Path(value)
    if not path.exists() and not path.is_absolute() and path.parts[:1] == ("data",):
        shipped = data_dir().joinpath(*path.parts[1:])
        if shipped.is_file():
            return str(shipped)
    return value


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from .harness import TASKS, methods

    names = ", ".join(methods())

    if name == "demo":
        p.add_argument("--task", default=None, help="comma-separated: detox, sentiment (default: both)")
        p.add_argument("--method", default=None, help="comma-separated methods to show (default: every one "
                       "meant for the task)")
        p.add_argument("--prompt", default=None, help="your own chat request instead of the demo prompts")
        p.add_argument("--max-new-tokens", type=int, default=24,
                       help="tokens per answer (default 24 keeps a warm run near a minute on 2 cores)")
        p.add_argument("--json", default=None, help="also write the demo's content here")
        p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    elif name == "eval":
        p.add_argument("--method", required=True, help=METHOD_HELP.format(names=names))
        p.add_argument("--task", required=True, help=", ".join(TASKS))
        p.add_argument("--prompts", required=True, type=item_file,
                       help="JSONL (prompt/prefix), TruthfulQA CSV or bias JSONL to evaluate on (data/...: "
                            "the copy shipped in the package, where there is no such file here)")
        p.add_argument("--train", default=None, type=item_file,
                       help="same format; default: the project's shipped data")
        p.add_argument("--max-new-tokens", type=int, default=48)
        p.add_argument("--json", default=None, help="write the result here")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one of the method's settings for the task (repeatable), e.g. "
                            "--set positions=generated --set alpha=0.02; each value is checked against the "
                            "method's declaration (steerlens methods --method NAME lists them)")
        p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    elif name == "sweep":
        p.add_argument("--method", required=True, help=METHOD_HELP.format(names=names))
        p.add_argument("--task", required=True, help="detox or sentiment")
        p.add_argument("--prompts", required=True, type=item_file,
                       help="JSONL (prompt/prefix) to generate on (data/...: the shipped copy)")
        p.add_argument("--sweep", required=True, metavar="KEY=V1,V2,...",
                       help="the setting to sweep and its values, e.g. --sweep alpha=0.05,0.1,0.2 "
                            "(list values in brackets: --sweep layers=[9],[15])")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a fixed setting (repeatable)")
        p.add_argument("--limit", type=int, default=None, help="first N prompts only")
        p.add_argument("--max-new-tokens", type=int, default=48)
        p.add_argument("--out", default="sweep-results")
        p.add_argument("--control", action="store_true",
                       help="also run, for each value, an edit of the same size per layer and token in a fixed "
                            "random direction (the equal-norm control); doubles the generation time")
        p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    elif name == "bench":
        p.add_argument("--out", default="bench-results")
        p.add_argument("--methods", default=None, help="comma-separated methods (names or module:Class; default: "
                       f"every registered one: {names})")
        p.add_argument("--tasks", default=",".join(TASKS))
        p.add_argument("--limit", type=int, default=None,
                       help="N prompts of each shipped eval set, spread evenly over it (both chat and raw kinds)")
        p.add_argument("--truthfulqa-limit", type=int, default=None,
                       help="first N held-out TruthfulQA questions (default: all of the held-out half)")
        p.add_argument("--max-new-tokens", type=int, default=48)
        p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    elif name == "methods":
        p.add_argument("--method", default=None, help="one method: its settings for every task")
    elif name == "dictionary":
        p.add_argument("--concepts", type=int, default=None,
                       help="first N concepts: the tasks' concepts, then by frequency (default: all)")
        p.add_argument("--layers", default=None, help="comma-separated layers (default: 6,9,12,15,18,21)")
        p.add_argument("--stimuli", default="model",
                       help="'model' (default: the shipped model-written sentences, data/concepts/stimuli.jsonl, "
                            "whose dictionary ships prebuilt), 'frames' (the shipped frames) or a stimuli JSONL path")
        p.add_argument("--position", choices=("last", "mean", "word"), default="word",
                       help="read each stimulus at the concept word (default), at its last token, or as the "
                            "mean over its tokens")


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
    except BrokenPipeError:  # the output was piped into a reader that stopped (| head): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


if __name__ == "__main__":
    sys.exit(main())
