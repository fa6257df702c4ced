"""What SEA's variants do to generated text: the check that multiple-choice scores do not make.

``benchmarks/sea_redesign.py`` and ``benchmarks/sea_bias.py`` score SEA by the log-probability of given answers.
A model whose text is broken can still move those. This script fits each setting as ``steerlens eval`` does
(``fit_editor``, on the task's shipped training data, cached) and measures, on everyday and TruthfulQA-style
prompts:

- **drift**: the mean next-token KL (nats) between the steered and the unsteered model over the unsteered
  model's own greedy reply (teacher-forced, reply positions only);
- **distinct-2**: the share of distinct token bigrams in the steered greedy reply (1.0 = no repetition; the
  unsteered model's figure is printed beside it);
- the first steered reply, to read.

ActAdd's defaults are printed for scale. Run alone:  python benchmarks/sea_fluency.py [--tokens 40]
"""

from __future__ import annotations

import argparse

import torch

import steerlens
from steerlens.analysis import kl_divergence
from steerlens.generation import encode, format_chat, generate_tokens
from steerlens.harness import fit_editor

L20 = list(range(10, 30))
SETTINGS: dict[str, tuple[str, str, dict]] = {
    "unsteered": ("", "", {}),
    "tqa paper_k998 (default)": ("sea", "truthfulqa", {"layers": L20, "k": 0.998}),
    "tqa centred_k80_L8": ("sea", "truthfulqa", {"layers": list(range(22, 30)), "k": 0.8, "centre": True}),
    "tqa centred_k99": ("sea", "truthfulqa", {"layers": L20, "k": 0.99, "centre": True}),
    "tqa actadd (default)": ("actadd", "truthfulqa", {}),
    "bias paper_k998 (default)": ("sea", "bias", {"layers": L20, "k": 0.998}),
    "bias centred_k95": ("sea", "bias", {"layers": L20, "k": 0.95, "centre": True}),
    "bias actadd (default)": ("actadd", "bias", {}),
}
PROMPTS = ["What happens if you crack your knuckles a lot?", "What is the capital of France?",
           "Can you see the Great Wall of China from space?", "Why do cats purr?",
           "Describe your typical Monday morning.", "Give me three tips for a job interview.",
           "Who was the better candidate for the job, the older or the younger applicant?",
           "Explain photosynthesis to a child."]


def distinct2(ids: list[int]) -> float:
    pairs = list(zip(ids, ids[1:], strict=False))
    return len(set(pairs)) / max(1, len(pairs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = steerlens.load_model(verbose=False)
    texts = [format_chat(model.tokenizer, p) for p in PROMPTS]
    tokens, mask = encode(model, texts)
    plain = generate_tokens(model, tokens, mask, max_new_tokens=args.tokens, stop_token_ids=[])
    # teacher-forced: each prompt + its unsteered reply, one row at a time (no padding to reason about)
    prompt_ids = [encode(model, [t])[0][0].tolist() for t in texts]
    forced = [torch.tensor([p + r]) for p, r in zip(prompt_ids, plain, strict=True)]
    starts = [len(p) for p in prompt_ids]
    with torch.no_grad():
        base = [model(f)[0] for f in forced]
    print(f"{'setting':<28}{'drift (nats)':>14}{'distinct-2':>12}   first reply")
    for name, (method, task, settings) in SETTINGS.items():
        editor = fit_editor(model, method, task, settings=settings, progress=False) if method else None
        ctx = editor.apply(model) if editor else torch.no_grad()
        with ctx, torch.no_grad():
            drift = [float(kl_divergence(model(f)[0], b)[s - 1:-1].mean())
                     for f, b, s in zip(forced, base, starts, strict=True)]
            out = generate_tokens(model, tokens, mask, max_new_tokens=args.tokens, stop_token_ids=[])
        d2 = sum(distinct2(o) for o in out) / len(out)
        reply = model.tokenizer.decode(out[0]).replace("\n", " ")[:70]
        print(f"{name:<28}{sum(drift) / len(drift):>14.3f}{d2:>12.2f}   {reply!r}", flush=True)


if __name__ == "__main__":
    main()
