"""Every-position PaCE: tokens/s against unsteered, where the solver's time goes, and why the edit is small.

The shipped detox default (six layers, every position, 3,101 concepts) on the shared chat prompts: greedy,
48 new tokens, batch 8, KV cache, interleaved rounds (``common.tokens_per_second``). Three contexts run side
by side: unsteered, PaCE with this solver, and PaCE with the solver as it was before this release
(``pdas_iters=0``, ``polish_at=()``, no pruning: no primal-dual active-set steps, and FISTA iterates until an
exact solve on its support passes the KKT check at iteration 20, 40, ...). Both solvers stop at the same
relative KKT tolerance (1e-4), so they must give the same generations up to that tolerance; the script
prints how many rows match token for token, and times the prompt's pass (one new token) apart.

Then, on the activations the hook saw at the decoding steps (recorded in one more generation), per layer:
milliseconds per solve, the code's support, the KKT gap, and the breakdown of ``||z||`` into the mean atom's,
the benign concepts', the undesirable concepts' part and the residual (``PaCEEditor.parts``). Run alone:

    python benchmarks/pace_speed.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PROMPTS, report_speed, tokens_per_second, torch_threads, unsteered  # noqa: E402

import steerlens  # noqa: E402
from steerlens import solvers  # noqa: E402
from steerlens.generation import encode, format_chat, generate_tokens  # noqa: E402
from steerlens.harness import fit_editor  # noqa: E402

NEW_TOKENS = 48


@contextmanager
def previous_solver():
    """The solver before this release: no active-set steps, exact solves only every 20 FISTA iterations, no
    pruning."""
    fista, polish = solvers._fista, solvers._polish
    solvers._fista = functools.partial(fista, polish_at=(), pdas_iters=0)
    solvers._polish = functools.partial(polish, prune=0)
    try:
        yield
    finally:
        solvers._fista, solvers._polish = fista, polish


def generations(model, ctx, new_tokens: int = NEW_TOKENS) -> list[list[int]]:
    tokens, mask = encode(model, [format_chat(model.tokenizer, p) for p in PROMPTS])
    with ctx():
        return [list(map(int, x)) for x in generate_tokens(model, tokens, mask, max_new_tokens=new_tokens,
                                                            stop_token_ids=[])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(torch_threads())
    model = steerlens.load_model(verbose=False)
    ed = fit_editor(model, "pace", "detox", progress=False)
    print(f"PaCE detox default: layers {ed.layers}, positions {ed.settings['positions']}, "
          f"{ed.tensors['atoms.15'].shape[1]} atoms, alpha {ed.settings['alpha']}")

    @contextmanager
    def pace_previous():
        with previous_solver(), ed.apply(model):
            yield

    contexts = {"unsteered": unsteered, "pace, this solver": lambda: ed.apply(model),
                "pace, previous solver": pace_previous}
    tps = tokens_per_second(model, PROMPTS, contexts, max_new_tokens=NEW_TOKENS, repeats=args.repeats)
    print(f"greedy generation, batch {len(PROMPTS)}, {NEW_TOKENS} new tokens, KV cache, "
          f"{args.repeats} interleaved rounds:")
    report_speed(tps)

    # the prompt's pass alone (one new token), interleaved: PaCE codes every prompt position there at once
    first = {"unsteered": 0.0, "pace": 0.0}
    for _ in range(args.repeats):
        for name, ctx in (("unsteered", unsteered), ("pace", lambda: ed.apply(model))):
            t0 = time.perf_counter()
            generations(model, ctx, new_tokens=1)
            first[name] += (time.perf_counter() - t0) / args.repeats
    print(f"the prompt's pass ({len(PROMPTS)} prompts, one new token): unsteered {first['unsteered']:.2f} s, "
          f"pace {first['pace']:.2f} s")

    new, old = generations(model, lambda: ed.apply(model)), generations(model, pace_previous)
    same = sum(a == b for a, b in zip(new, old, strict=True))
    first = [next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None) 
             for a, b in zip(new, old, strict=True)]
    print(f"generations, this solver vs previous: {same} of {len(new)} rows identical; first differing token "
          f"per row: {first}")

    # the activations each layer's hook saw at the decoding steps (the prompt's pass is the first call)
    seen: dict[int, list[torch.Tensor]] = {}
    coefficients = ed.coefficients

    def recording(layer, z):
        seen.setdefault(layer, []).append(z.clone())
        return coefficients(layer, z)

    ed.coefficients = recording
    try:
        generations(model, lambda: ed.apply(model))
    finally:
        del ed.coefficients
    print("\nper layer, decoding steps (batch 8):")
    print(f"{'layer':>5}{'ms/solve':>10}{'support':>9}{'rel KKT':>10}   share of ||z||: {'mean atom':>9}"
          f"{'benign':>8}{'undesir.':>9}{'residual':>9}")
    total = 0.0
    for layer in ed.layers:
        steps = seen[layer][1:]
        t0 = time.perf_counter()
        for z in steps:
            ed.coefficients(layer, z)
        ms = (time.perf_counter() - t0) / len(steps) * 1000
        total += ms
        parts = [ed.parts(layer, z) for z in steps]
        z = torch.cat(steps)
        n = z.norm(dim=-1)
        c = torch.cat([p["coefficients"] for p in parts]) / n[:, None]
        y = z / n[:, None]
        D = ed.tensors[f"atoms.{layer}"]
        gap = solvers.kkt_violation(D, y, c, ed.settings["alpha"], ed.settings["l1_ratio"]).amax(-1) / \
            (y @ D).abs().amax(-1)

        def share(key, parts=parts, n=n):
            return float((torch.cat([p[key] for p in parts]) / n).mean())

        print(f"{layer:>5}{ms:>10.1f}{float((c != 0).sum(-1).float().mean()):>9.1f}{float(gap.max()):>10.1e}   "
              f"{'':>15}{share('mean'):>9.3f}{share('benign'):>8.3f}{share('removed'):>9.4f}{share('residual'):>9.3f}")
    print(f"solver time per decoding step, all layers: {total:.1f} ms")
    print(f"(an unsteered decoding step of the batch: {1000 * len(PROMPTS) / tps['unsteered']:.1f} ms)")


if __name__ == "__main__":
    main()
