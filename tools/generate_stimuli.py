"""Generate PaCE stimulus sentences for every concept with a language model (default: SmolLM2-135M-Instruct).

For each concept in data/concepts/concepts.tsv, the model is asked (chat template, sampled, seeded)
for short sentences that use the word; answers are cut to their first sentence and kept only when they
use the concept as a word (inflections allowed), are not a refusal or a sentence about the word itself,
and are new, until ``--per-concept`` stimuli are collected (or the rounds run out). Results are appended
to ``--out`` (default data/concepts/stimuli.jsonl), one concept per line, so the script resumes. On a
rerun, the stimuli already there are filtered again, and concepts left with fewer than ``--min-stimuli``
are generated afresh (raise ``--rounds`` for them); the file is rewritten in concept-list order.

Two backends, same prompt, filter and output:
- default: any TransformerLens model through ``steerlens.generate`` (``--model NAME``); on 2 CPU cores
  with SmolLM2 this costs about 20 s per concept.
- ``--hf PATH``: transformers' own batched ``generate`` on a GPU if there is one, for a HF model folder or
  a GGUF file. Needs only torch and transformers (plus ``gguf`` for a GGUF file), not steerlens. The
  shipped ``data/concepts/stimuli.jsonl`` was made this way, on one H100, in minutes.

    python tools/generate_stimuli.py [--per-concept 20] [--limit 1000] [--model NAME | --hf PATH]
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

DATA = Path(__file__).resolve().parents[1] / "data" / "concepts"
PROMPT = 'Write one short, simple sentence that uses the word "{concept}".'
SAMPLING = {"temperature": 0.9, "top_p": 0.95, "max_new_tokens": 28}
# answers that talk about the task instead of using the word: refusals, "The word X means ..."
META = re.compile(r"\b(word|words|sentence|sorry|as an ai|i can't|i cannot|i'm unable|verb|noun|adjective|"
                  r"adverb|term|refers? to|defined|definition|means)\b", re.I)


def first_sentence(text: str) -> str:
    text = " ".join(text.replace('"', "").split())
    m = re.search(r"^(.+?[.!?])(\s|$)", text)
    return (m.group(1) if m else text).strip()


def keep(concept: str, sentence: str) -> bool:
    """A usable stimulus: 3-30 words, uses ``concept`` as a word (a suffix such as -s or -ed is fine),
    and does not talk about the word or the task."""
    word = re.compile(rf"(?<![a-z]){re.escape(concept.lower())}[a-z]*")
    uses = word.search(sentence.lower()) is not None
    talks_about = META.search(word.sub("", sentence.lower())) is not None  # "word" may be the concept itself
    return uses and 3 <= len(sentence.split()) <= 30 and not talks_about


def task_first_concepts(limit: int | None) -> list[str]:
    rows = [line.split("\t") for line in (DATA / "concepts.tsv").read_text().splitlines()[1:]]
    # the concepts the shipped tasks need first, then by word frequency: any prefix keeps the task concepts
    rows.sort(key=lambda r: (not r[2].startswith("task") and ",task" not in r[2], int(r[0])))
    return [r[1] for r in rows][:limit]


Sampler = Callable[[list[str], int], list[str]]  # (user messages, seed) -> answers


def tl_sampler(model_name: str | None) -> tuple[Sampler, str]:
    import steerlens

    model = steerlens.load_model(model_name)

    def sample(prompts: list[str], seed: int) -> list[str]:
        return steerlens.generate(model, prompts, do_sample=True, seed=seed, batch_size=48, **SAMPLING)

    return sample, model.cfg.model_name


def hf_sampler(path: str, batch_size: int) -> tuple[Sampler, str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    kwargs = {"gguf_file": p.name} if p.suffix == ".gguf" else {}
    where = p.parent if p.suffix == ".gguf" else p
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs).to(device).eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    @torch.no_grad()
    def sample(prompts: list[str], seed: int) -> list[str]:
        torch.manual_seed(seed)
        out = []
        for i in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                   add_generation_prompt=True) for q in prompts[i:i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True).to(device)
            ids = model.generate(**enc, do_sample=True, pad_token_id=tokenizer.pad_token_id, **SAMPLING)
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out

    return sample, f"{p.name} via transformers on {device}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-concept", type=int, default=20)
    ap.add_argument("--limit", type=int, default=None, help="only the first N concepts")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch-concepts", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1024, help="sequences per generate call (--hf)")
    ap.add_argument("--model", default=None, help="TransformerLens model name (default backend)")
    ap.add_argument("--hf", default=None, help="HF model folder or GGUF file: generate with transformers")
    ap.add_argument("--min-stimuli", type=int, default=10, help="regenerate concepts with fewer on a rerun")
    ap.add_argument("--out", default=str(DATA / "stimuli.jsonl"))
    args = ap.parse_args()
    out = Path(args.out)
    concepts = task_first_concepts(args.limit)
    kept = refilter(out, args.min_stimuli)
    todo = [c for c in concepts if c not in kept]
    sample, name = hf_sampler(args.hf, args.batch_size) if args.hf else tl_sampler(args.model)
    for start in tqdm(range(0, len(todo), args.batch_concepts), desc="stimuli", unit="batch"):
        group = todo[start:start + args.batch_concepts]
        found: dict[str, list[str]] = {c: [] for c in group}
        for round_ in range(args.rounds):
            need = [c for c in group if len(found[c]) < args.per_concept]
            if not need:
                break
            prompts = [PROMPT.format(concept=c) for c in need for _ in range(args.per_concept)]
            for i, answer in enumerate(sample(prompts, 1000 * round_ + start)):
                c = need[i // args.per_concept]
                s = first_sentence(answer)
                if keep(c, s) and s not in found[c]:
                    found[c].append(s)
        with out.open("a", encoding="utf-8") as f:
            for c in group:
                f.write(json.dumps({"concept": c, "stimuli": found[c][: args.per_concept],
                                    "generator": f"{name}, sampled T=0.9 top-p 0.95"}) + "\n")
    order = {c: i for i, c in enumerate(concepts)}
    # every stimulus in the file has passed `keep` by now: drop concepts that got none, sort, write once
    rows = [r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines()) if r["stimuli"]]
    rows.sort(key=lambda r: order.get(r["concept"], len(order)))
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    short = [r["concept"] for r in rows if len(r["stimuli"]) < args.min_stimuli]
    print(f"{len(rows)} concepts, {sum(len(r['stimuli']) for r in rows)} stimuli; {len(short)} with fewer than "
          f"{args.min_stimuli}: {short[:20]}")


def refilter(path: Path, min_stimuli: int) -> dict[str, dict]:
    """Rows of an existing stimuli file, their stimuli filtered again by ``keep``; rows left with fewer
    than ``min_stimuli`` are dropped (the file is rewritten without them, to be generated again)."""
    if not path.is_file():
        return {}
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    for r in rows:
        r["stimuli"] = [t for t in r["stimuli"] if keep(r["concept"], t)]
    good = {r["concept"]: r for r in rows if len(r["stimuli"]) >= min_stimuli}
    path.write_text("".join(json.dumps(r) + "\n" for r in good.values()), encoding="utf-8")
    return good


if __name__ == "__main__":
    main()
