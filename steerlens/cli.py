"""The ``steerlens`` command: ``steerlens demo`` (the main job), and room for more subcommands."""

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


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "demo": ("Answer the same prompts unsteered and steered by each method, side by side", cmd_demo),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steerlens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == "demo":
            p.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except (ValueError, FileNotFoundError) as e:
        print(f"steerlens {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
