"""Generate PaCE stimulus sentences for every concept with a language model (default: SmolLM2-135M-Instruct).

For each concept in data/concepts/concepts.tsv, the model is asked (chat template, sampled, seeded)
for short sentences that use the word; answers are cut to their first sentence, kept only when they
contain the concept, and de-duplicated, until ``--per-concept`` stimuli are collected (or the rounds run
out). Results are appended to data/concepts/stimuli.jsonl, one concept per line, so the script resumes.
Any TransformerLens model name works with ``--model``.

    python tools/generate_stimuli.py [--per-concept 12] [--limit 1000] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from tqdm.auto import tqdm

import steerlens

DATA = Path(__file__).resolve().parents[1] / "data" / "concepts"
PROMPT = 'Write one short, simple sentence that uses the word "{concept}".'


def first_sentence(text: str) -> str:
    text = " ".join(text.replace('"', "").split())
    m = re.search(r"^(.+?[.!?])(\s|$)", text)
    return (m.group(1) if m else text).strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-concept", type=int, default=12)
    ap.add_argument("--limit", type=int, default=None, help="only the first N concepts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-concepts", type=int, default=8)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    rows = [line.split("\t") for line in (DATA / "concepts.tsv").read_text().splitlines()[1:]]
    # the concepts the shipped tasks need first, then by word frequency: any prefix keeps the task concepts
    rows.sort(key=lambda r: (not r[2].startswith("task") and ",task" not in r[2], int(r[0])))
    concepts = [r[1] for r in rows][: args.limit]
    out = DATA / "stimuli.jsonl"
    done = {json.loads(x)["concept"] for x in out.read_text().splitlines()} if out.is_file() else set()
    todo = [c for c in concepts if c not in done]
    model = steerlens.load_model(args.model)
    name = model.cfg.model_name
    for start in tqdm(range(0, len(todo), args.batch_concepts), desc="stimuli", unit="batch"):
        group = todo[start:start + args.batch_concepts]
        found: dict[str, list[str]] = {c: [] for c in group}
        for round_ in range(args.rounds):
            need = [c for c in group if len(found[c]) < args.per_concept]
            if not need:
                break
            prompts = [PROMPT.format(concept=c) for c in need for _ in range(args.per_concept)]
            answers = steerlens.generate(model, prompts, max_new_tokens=28, do_sample=True, temperature=0.9,
                                         top_p=0.95, seed=1000 * round_ + start, batch_size=48)
            for i, answer in enumerate(answers):
                c = need[i // args.per_concept]
                s = first_sentence(answer)
                if c in s.lower() and 3 <= len(s.split()) <= 30 and s not in found[c]:
                    found[c].append(s)
        with out.open("a", encoding="utf-8") as f:
            for c in group:
                f.write(json.dumps({"concept": c, "stimuli": found[c][: args.per_concept],
                                    "generator": f"{name}, sampled T=0.9 top-p 0.95"}) + "\n")


if __name__ == "__main__":
    main()
