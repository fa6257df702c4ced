"""One short check for a GPU machine: parity, steering and speed of every method on the default model in half
precision, with editors fitted in float32.

    python benchmarks/gpu_check.py                      # CUDA, float16 (about 3-5 minutes on one GPU)
    python benchmarks/gpu_check.py --device cpu --dtype bfloat16 --quick    # the same path on a CPU

It prints, for the chosen device and dtype:
1. parity: the half-precision model against float32 on the same device (top-1 agreement, largest
   next-token probability difference over a few prompts);
2. per method (ActAdd, OrthoProj, SEA, PaCE, RE-Control): the editor is fitted on the float32 model with
   ``steerlens eval``'s defaults, then applied to the half-precision model: whether every hook returned its
   activation's device and dtype, whether the answers changed, the task metric unsteered vs steered on a few
   prompts, and steered vs unsteered tokens/s measured side by side;
3. with two or more GPUs, the same ActAdd editor on a model split over two devices (``n_devices=2``).
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, tokens_per_second  # noqa: E402

import steerlens  # noqa: E402
from steerlens.data import data_dir  # noqa: E402
from steerlens.evaluation import offensive_prob, vader_compound  # noqa: E402
from steerlens.harness import fit_editor, load_items, respond  # noqa: E402

METHOD_TASK = {"actadd": "sentiment", "orthoproj": "sentiment", "sea": "sentiment", "pace": "detox",
               "recontrol": "sentiment"}


def parity(ref, half, prompts) -> tuple[float, float]:
    from steerlens.generation import encode, format_chat

    tokens, mask = encode(ref, [format_chat(ref.tokenizer, p) for p in prompts])
    device = next(ref.parameters()).device
    tokens, mask = tokens.to(device), mask.to(device)
    with torch.no_grad():
        a = ref(tokens, attention_mask=mask)[:, -1].float().softmax(-1)
        b = half(tokens, attention_mask=mask)[:, -1].float().softmax(-1)
    return float((a.argmax(-1) == b.argmax(-1)).float().mean()), float((a - b).abs().max())


def device_dtype_probe(model, editor) -> bool:
    """Run one forward pass with the editor and check every hook's output against its input."""
    seen = []
    hooks = editor.fwd_hooks()

    def check(name, fn):
        def wrapped(act, hook):
            out = fn(act, hook)
            seen.append(out.device == act.device and out.dtype == act.dtype and bool(torch.isfinite(out).all()))
            return out
        return wrapped

    from steerlens.editing import prompt_span
    from steerlens.generation import encode

    tokens, mask = encode(model, ["How was your day?"])
    device = next(model.parameters()).device
    tokens, mask = tokens.to(device), mask.to(device)
    with torch.no_grad(), prompt_span(tokens.shape[1]):
        model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(n, check(n, f)) for n, f in hooks])
    return bool(seen) and all(seen)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--quick", action="store_true", help="4 prompts, 16 new tokens (a CPU smoke run)")
    ap.add_argument("--methods", default=",".join(METHOD_TASK))
    args = ap.parse_args()
    n_prompts, new_tokens = (4, 16) if args.quick else (16, 48)
    failures = []
    t_start = time.perf_counter()
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}), "
          f"dtype {args.dtype}, torch {torch.__version__}")

    ref = steerlens.load_model(device=args.device, verbose=False)
    half = steerlens.load_model(device=args.device, dtype=args.dtype, verbose=False)
    agree, diff = parity(ref, half, PROMPTS)
    print(f"parity {args.dtype} vs float32: top-1 agreement {agree:.2f}, max |p diff| {diff:.4f}")
    if agree < 0.75:
        failures.append("parity")

    rows = {t: load_items(data_dir() / t / "eval.jsonl", t)[:n_prompts] for t in ("sentiment", "detox")}
    metric = {"sentiment": ("vader", vader_compound), "detox": ("offensive", offensive_prob)}
    base = {t: respond(half, r, new_tokens) for t, r in rows.items()}
    print(f"{'method':<10} {'task':<10} {'hooks ok':>8} {'changed':>8} {'metric':>10} {'unsteered':>10} "
          f"{'steered':>9} {'tok/s':>8} {'x unsteered':>11}")
    for method in args.methods.split(","):
        task = METHOD_TASK[method]
        editor = fit_editor(ref, method, task, progress=False)  # fitted in float32
        ok = device_dtype_probe(half, editor)
        with editor.apply(half):
            steered = respond(half, rows[task], new_tokens)
        name, fn = metric[task]
        m0, m1 = sum(fn(base[task])) / n_prompts, sum(fn(steered)) / n_prompts
        speed = tokens_per_second(half, PROMPTS[:n_prompts], {"unsteered": lambda: torch.no_grad(),
                                                              "steered": lambda e=editor: e.apply(half)},
                                  max_new_tokens=new_tokens, repeats=2)
        changed = sum(a != b for a, b in zip(base[task], steered, strict=True))
        print(f"{method:<10} {task:<10} {str(ok):>8} {changed:>5}/{n_prompts:<2} {name:>10} {m0:>10.3f} "
              f"{m1:>9.3f} {speed['steered']:>8.1f} {speed['steered'] / speed['unsteered']:>10.2f}x")
        if not ok or changed == 0:
            failures.append(method)

    if args.device == "cuda" and torch.cuda.device_count() >= 2:
        split = steerlens.load_model(dtype=args.dtype, n_devices=2, verbose=False)
        editor = fit_editor(ref, "actadd", "sentiment", progress=False)
        ok = device_dtype_probe(split, editor)
        with editor.apply(split):
            out = respond(split, rows["sentiment"][:2], 8)
        print(f"two devices: hooks ok {ok}, answers {out}")
        if not ok:
            failures.append("n_devices=2")
    else:
        print("two devices: skipped (fewer than two GPUs)")
    print(f"{time.perf_counter() - t_start:.0f} s; " + ("all checks passed" if not failures else f"FAILED: {failures}"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
