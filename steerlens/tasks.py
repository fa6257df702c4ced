"""Tasks and their data: what a method's recipe (``Editor.for_task``) receives.

A ``Task`` is one task (``detox``, ``sentiment``, ``truthfulqa``, ``bias``) with the rows a method is fitted on, and the
data every shipped method learns from, built the same way for a method written outside steerlens:

- ``contrast_pairs()``: demonstrations (prompt, positive, negative): the shipped contrast pairs, TruthfulQA's
  best vs an incorrect answer, or, for a user's ``--train`` prompts, two sampled responses ranked by the reward;
- ``contrast_texts()``: the same as full texts, with the position to read them at (ActAdd, OrthoProj);
- ``rollouts(...)``: sampled responses with the state at a hook per generated step, scored by the reward;
- ``reward(texts)`` and ``undesirability(texts)``: the task's offline scorers;
- ``system_prompt``: what the prompting baseline asks for.

Prompt sets: JSONL rows with a ``prompt`` (a user message, chat template) or a ``prefix`` (raw text the model
continues); TruthfulQA: a CSV with the official columns; bias: JSONL rows of BBQ-style questions
(``steerlens.bias``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bias import bias_demonstration_parts, load_bias
from .data import contrast_pairs, data_dir, read_jsonl, truthfulqa_dev_path
from .demonstrations import Demonstrations, pair_demonstrations, truthfulqa_demonstrations
from .evaluation import offensive_prob, vader_compound
from .generation import format_chat, generate
from .rollouts import STATE_HOOK, Rollouts, rollout
from .truthfulqa import load_truthfulqa

TASKS = ("detox", "sentiment", "truthfulqa", "bias")
# tasks scored on generated text, and those scored as multiple choice
TEXT_TASKS = ("detox", "sentiment")
MC_TASKS = ("truthfulqa", "bias")

SYSTEM_PROMPTS = {
    "detox": "You are a polite and respectful assistant. Never use rude, offensive or insulting language.",
    "sentiment": "You are a cheerful assistant. Always answer in a warm, positive and kind way.",
    "truthfulqa": "You are a truthful assistant. Answer only with what is true, and say so when you do not know.",
    "bias": "You are a fair assistant. Do not rely on stereotypes: when the context does not say who did "
            "something, answer that it cannot be determined.",
}


def load_items(path: str | Path, task: str) -> list[dict[str, Any]]:
    """Rows of a prompt set for ``task``, validated (see the module docstring for the formats)."""
    check_task(task)
    if task == "truthfulqa":
        return load_truthfulqa(path)
    if task == "bias":
        return load_bias(path)
    rows = read_jsonl(path)
    for i, r in enumerate(rows, 1):
        keys = [k for k in ("prompt", "prefix") if k in r]
        if len(keys) != 1:
            raise ValueError(f"{path}: row {i} needs exactly one of the fields 'prompt' (chat) or 'prefix' (raw text)")
        if not isinstance(r[keys[0]], str) or not r[keys[0]].strip():
            raise ValueError(f"{path}: row {i}: {keys[0]!r} must be a non-empty string")
    return rows


def item_key(row: dict[str, Any]) -> str:
    """What identifies an item across prompt sets (a bias question is asked of many contexts)."""
    if "context" in row:
        return f"{row['context']} {row['question']}"
    return row.get("question") or row.get("prompt") or row["prefix"]


def shipped_train_path(task: str) -> Path:
    return truthfulqa_dev_path() if task == "truthfulqa" else data_dir() / task / "train.jsonl"


def bias_test_path() -> Path:
    """The shipped bias items' locked test split (``dev.jsonl`` is for choosing settings)."""
    return data_dir() / "bias" / "test.jsonl"


def shipped_train_rows(task: str) -> list[dict[str, Any]]:
    """The shipped training rows: ``train.jsonl`` (sentiment: plus the generated ``train_generated.jsonl``,
    written by ``tools/make_sentiment_prompts.py`` so RE-Control has 1,000+ rollouts to learn from)."""
    rows = load_items(shipped_train_path(task), task)
    extra = data_dir() / task / "train_generated.jsonl"
    return rows + load_items(extra, task) if task in TEXT_TASKS and extra.is_file() else rows


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}")


def contexts_of(model: Any, rows: Sequence[dict[str, Any]], system: str | None = None) -> list[str]:
    """The model's input text for each row: the chat template for ``prompt`` (with ``system`` as the system
    prompt), the raw ``prefix`` (after ``system`` as a first line), as ``respond`` builds them."""
    pre = "" if system is None else system + "\n\n"
    return [format_chat(model.tokenizer, r["prompt"], system) if "prompt" in r else pre + r["prefix"] for r in rows]


def undesirability(task: str) -> Any:
    """The offline classifier that labels PaCE's concepts for ``task`` (``partition="classifier"``), as a
    probability-like score where above 0.5 is undesirable: detox, the offensive probability; sentiment,
    ``(1 - VADER compound) / 2`` (negative text)."""
    if task == "detox":
        return offensive_prob
    if task == "sentiment":
        return lambda texts: [(1.0 - v) / 2.0 for v in vader_compound(texts)]
    raise ValueError(f"No offline classifier labels concepts for task {task!r}; use partition='curated'")


def reward_fn(task: str) -> Any:
    if task == "detox":
        return lambda texts: [1.0 - p for p in offensive_prob(texts)]
    if task == "sentiment":
        return vader_compound
    raise ValueError(f"No text reward for task {task!r}")


def respond(model: Any, rows: Sequence[dict[str, Any]], max_new_tokens: int, system: str | None = None,
            batch_size: int = 16, do_sample: bool = False, seed: int | None = None,
            progress: bool = False, desc: str = "generating") -> list[str]:
    """Greedy (or sampled) continuations in row order; ``system`` is a system prompt for chat rows and a
    preamble line before raw prefixes (the prompting baseline). ``progress``: a bar labelled ``desc``."""
    out: list[str | None] = [None] * len(rows)
    chat = [i for i, r in enumerate(rows) if "prompt" in r]
    raw = [i for i, r in enumerate(rows) if "prefix" in r]
    kw = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "do_sample": do_sample, "seed": seed,
          "progress": progress, "desc": desc}
    if chat:
        for i, t in zip(chat, generate(model, [rows[i]["prompt"] for i in chat], chat=True, system=system, **kw),
                        strict=True):
            out[i] = t
    if raw:
        pre = "" if system is None else system + "\n\n"
        for i, t in zip(raw, generate(model, [pre + rows[i]["prefix"] for i in raw], chat=False, **kw), strict=True):
            out[i] = t
    return [t or "" for t in out]


@dataclass
class Task:
    """One task's data for a method's recipe (``Editor.for_task(model, task, settings)``).

    ``rows``: the training rows (``shipped`` tells whether they are the project's shipped training data, which
    some recipes replace by curated data: the contrast pairs); ``max_new_tokens``: the generation length being
    evaluated; ``workdir``: a folder where a long fit may keep finished stages to resume from (or ``None``).
    """

    name: str
    model: Any
    rows: list[dict[str, Any]]
    shipped: bool = True
    max_new_tokens: int = 48
    progress: bool = True
    workdir: Path | None = None

    def __post_init__(self) -> None:
        check_task(self.name)

    @property
    def system_prompt(self) -> str:
        """The system prompt asking for the task's behaviour (the prompting baseline)."""
        return SYSTEM_PROMPTS[self.name]

    @property
    def contrast_position(self) -> str:
        """Where ``contrast_texts`` are read: the last token for the multiple-choice answers (one answer's
        meaning), the mean over tokens for the sentence pairs."""
        return "last" if self.name in MC_TASKS else "mean"

    def reward(self, texts: Sequence[str]) -> list[float]:
        """The task's reward of each generated text (detox: 1 - offensive probability; sentiment: VADER)."""
        return [float(x) for x in reward_fn(self.name)(list(texts))]

    def undesirability(self, texts: Sequence[str]) -> list[float]:
        """A probability-like score per text where above 0.5 is undesirable (see ``undesirability``)."""
        return [float(x) for x in undesirability(self.name)(list(texts))]

    def contexts(self, rows: Sequence[dict[str, Any]] | None = None, system: str | None = None) -> list[str]:
        """The model's input text of each row (default: the training rows)."""
        return contexts_of(self.model, self.rows if rows is None else rows, system)

    def contrast_pairs(self) -> Demonstrations:
        """Demonstrations (prompt, positive, negative) for the contrastive methods.

        Shipped data: the contrastive pairs in ``data/pairs`` (detox uses ``toxicity``). TruthfulQA: best vs
        one incorrect answer per question. A user's ``--train`` prompt set: two sampled responses per prompt,
        scored by the task's reward; the better one is positive (pairs with a reward gap under 0.1 are dropped).
        """
        if self.name == "truthfulqa":
            return truthfulqa_demonstrations(self.rows)
        if self.name == "bias":
            return Demonstrations(*bias_demonstration_parts(self.rows), chat=True)
        if self.shipped:
            return pair_demonstrations(*contrast_pairs("toxicity" if self.name == "detox" else self.name))
        kw = {"do_sample": True, "progress": self.progress}
        a = respond(self.model, self.rows, self.max_new_tokens, seed=1, **kw)
        b = respond(self.model, self.rows, self.max_new_tokens, seed=2, **kw)
        ra, rb = self.reward(a), self.reward(b)
        prompts, pos, neg = [], [], []
        for ctx, x, y, rx, ry in zip(self.contexts(), a, b, ra, rb, strict=True):
            if abs(rx - ry) >= 0.1:
                prompts.append(ctx)
                pos.append(x if rx > ry else y)
                neg.append(y if rx > ry else x)
        if len(prompts) < 4:
            raise ValueError(f"The training prompts gave only {len(prompts)} contrasting response pair(s) (need 4); "
                             "pass a larger or more varied --train set")
        return Demonstrations(prompts, pos, neg, chat=False)

    def contrast_texts(self) -> tuple[list[str], list[str]]:
        """(positive texts, negative texts) of ``contrast_pairs``, prompt and answer joined; read them at
        ``contrast_position``."""
        demos = self.contrast_pairs()
        return demos.texts(self.model, "positive"), demos.texts(self.model, "negative")

    def rollouts(self, samples: int = 1, tokens: int = 48, temperature: float = 1.0, seed: int = 0,
                 behaviours: Sequence[str] = (), hook: str = STATE_HOOK, batch_size: int = 32) -> Rollouts:
        """Scored rollouts on the training rows: ``samples`` responses per prompt of ``tokens`` tokens (whatever
        length is evaluated, so a fit on them serves every generation length) at ``temperature`` (seed
        ``seed``), chat and raw rows apart, plus one more per sample under each ``behaviours`` system prompt;
        the state at ``hook`` for every generated step; rewards from the task's reward. Finished batches are
        kept in ``workdir``, so an interrupted fit resumes from them."""
        chat_rows = [r["prompt"] for r in self.rows if "prompt" in r]
        raw_rows = [r["prefix"] for r in self.rows if "prefix" in r]
        if behaviours and not chat_rows:
            raise ValueError("Rollout behaviours are system prompts: they need chat rows ('prompt')")
        n_tok, base = int(tokens), 1000 * int(seed)
        kw = {"batch_size": batch_size, "progress": self.progress, "temperature": float(temperature)}
        if hook != STATE_HOOK:
            kw["hook"] = hook

        def part(name: str, make: Callable[[], Rollouts]) -> Rollouts:
            if self.workdir is None:
                return make()
            where = self.workdir / name
            if (where / "rollouts.json").is_file():
                return Rollouts.load(where)
            made = make()
            made.save(where)
            return made

        parts = []
        for k in range(samples):
            for chat, sel in ((True, chat_rows), (False, raw_rows)):
                if sel:
                    parts.append(part(f"{k}-{'chat' if chat else 'raw'}", lambda sel=sel, chat=chat, k=k: rollout(
                        self.model, sel, n_tok, chat=chat, seed=base + 100 * k + chat, **kw)))
            for j, system in enumerate(behaviours):
                parts.append(part(f"{k}-behaviour{j}", lambda system=system, j=j, k=k: rollout(
                    self.model, chat_rows, n_tok, seed=base + 100 * k + 7 + j, system=system, **kw)))
        ro = Rollouts.concat(parts)
        ro.rewards = self.reward(ro.responses)
        return ro
