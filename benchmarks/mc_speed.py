"""Multiple-choice scoring speed against its limit: one batched forward pass over the same tokens.

For N TruthfulQA development questions, it counts the tokens scoring needs (each question's prompt once, plus
every answer), then times, side by side in one run:

- ``limit``: one forward pass (with the unembedding at every position, as scoring needs at answer tokens)
  over that many tokens, packed into rows of 128 tokens, batches of 8: the cost of the tokens themselves;
- ``score_truthfulqa`` with one question per pass (``batch_size=1``, the former way) and with the default
  batch of questions (prompts batched, keys and values shared by all the answers of a question).

Run alone on the machine:  python benchmarks/mc_speed.py [--n 120]
"""

from __future__ import annotations

import argparse
import time

import torch

import steerlens
from steerlens.data import truthfulqa_dev_path
from steerlens.generation import format_chat
from steerlens.truthfulqa import _answer_ids, load_truthfulqa, score_truthfulqa


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=120)
    args = ap.parse_args()
    model = steerlens.load_model(verbose=False)
    rows = load_truthfulqa(truthfulqa_dev_path())[: args.n]
    tok = model.tokenizer
    n_tokens = 0
    for r in rows:
        prompt = format_chat(tok, r["question"])
        n_tokens += len(tok(prompt, add_special_tokens=False)["input_ids"])
        n_tokens += sum(len(a) for a in _answer_ids(tok, prompt, [r["best"], *r["incorrect"], *r["correct"]]))
    width = 128
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, ((n_tokens + width - 1) // width, width), generator=g)
    with torch.no_grad():
        model(ids[:2])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(ids), 8):
            model(ids[i:i + 8]).log_softmax(-1)
        limit = time.perf_counter() - t0
    times = {}
    for bs in (1, 8, 16):
        score_truthfulqa(model, rows[:4], progress=False, batch_size=bs)  # warm-up
        t0 = time.perf_counter()
        res = score_truthfulqa(model, rows, progress=False, batch_size=bs)
        times[bs] = (time.perf_counter() - t0, res["mc1"], res["mc2"])
    print(f"{len(rows)} questions, {n_tokens} tokens to score (prompts once, every answer)")
    print(f"{'':<34}{'seconds':>9}{'questions/s':>13}{'x limit':>9}")
    print(f"{'limit: one forward over the tokens':<34}{limit:>9.1f}{len(rows) / limit:>13.2f}{1.0:>9.2f}")
    for bs, (t, mc1, mc2) in times.items():
        print(f"{f'score_truthfulqa, batch {bs}':<34}{t:>9.1f}{len(rows) / t:>13.2f}{t / limit:>9.2f}"
              f"   MC1 {mc1:.3f} MC2 {mc2:.4f}")


if __name__ == "__main__":
    main()
