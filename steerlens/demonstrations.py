"""Demonstrations: prompts with a positive, a negative and (optionally) a neutral answer each.

The data that contrastive methods learn from (SEA's cross-covariances, ActAdd's and OrthoProj's mean
differences), built from contrast pairs, TruthfulQA rows or true/false facts. A task hands them to any
method's recipe (``steerlens.tasks.Task.contrast_pairs``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .generation import format_chat, generate


@dataclass
class Demonstrations:
    """Prompts with a neutral (the model's own), a positive and a negative answer each.

    ``chat=True`` renders prompts with the chat template (answers follow the assistant tag);
    otherwise the prompt is raw text and answers continue it.
    """

    prompts: list[str]
    positive: list[str]
    negative: list[str]
    neutral: list[str] | None = None
    chat: bool = True

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if n == 0:
            raise ValueError("No demonstrations")
        if len(self.positive) != n or len(self.negative) != n or (self.neutral is not None and len(self.neutral) != n):
            raise ValueError("prompts, positive, negative (and neutral) must have the same length")

    def with_neutral(self, model: Any, max_new_tokens: int = 40, batch_size: int = 16,
                     progress: bool = True, cache: bool = True) -> Demonstrations:
        """Fill ``neutral`` with the model's own greedy answers (paper: neutral = model completion).

        ``cache``: the answers are kept under ``cache_dir()/neutral``, keyed by the model's weights, the
        prompts and the length, so a refit with other settings (or another method) does not generate them
        again. Each distinct prompt is answered once."""
        if self.neutral is not None:
            return self
        unique = list(dict.fromkeys(self.prompts))

        def make() -> list[str]:
            # an empty raw prompt (contrast pairs with no shared first words) is answered from the start token
            start = model.tokenizer.bos_token or model.tokenizer.eos_token
            asked = [p or ("" if self.chat else start) for p in unique]
            answers = generate(model, asked, max_new_tokens=max_new_tokens, chat=self.chat,
                               batch_size=batch_size, progress=progress)
            return [a.strip() for a in answers]

        if cache:
            from .editing import weights_fingerprint
            from .files import content_key, memo
            from .models import cache_dir

            key = content_key(str(getattr(model.cfg, "model_name", "")), weights_fingerprint(model), unique,
                              self.chat, max_new_tokens)
            answers = memo(cache_dir() / "neutral" / f"{key}.json", make,
                           save=lambda v, p: p.write_text(json.dumps(v)), load=lambda p: _strings(p, len(unique)))
        else:
            answers = make()
        by_prompt = dict(zip(unique, answers, strict=True))
        return Demonstrations(self.prompts, self.positive, self.negative, [by_prompt[p] for p in self.prompts],
                              self.chat)

    def texts(self, model: Any, which: str) -> list[str]:
        answers = {"positive": self.positive, "negative": self.negative, "neutral": self.neutral}[which]
        if answers is None:
            raise ValueError("Neutral answers missing: call demos.with_neutral(model) first")
        prefix = [format_chat(model.tokenizer, p) if self.chat else p for p in self.prompts]
        sep = "" if self.chat else " "
        return [p + sep + a if p else a for p, a in zip(prefix, answers, strict=True)]


def _strings(path: Path, n: int) -> list[str]:
    value = json.loads(path.read_text())
    if not isinstance(value, list) or len(value) != n or not all(isinstance(x, str) for x in value):
        raise ValueError(f"{path}: not {n} cached answers")
    return value


def truthfulqa_demonstrations(rows: Sequence[dict[str, Any]], seed: int = 0,
                              answers: str = "best") -> Demonstrations:
    """From TruthfulQA rows (``load_truthfulqa``).

    ``answers="best"``: one demonstration per question, best answer (+) and one incorrect answer (-).
    ``answers="all"``: every correct and every incorrect answer is used; question q gives
    ``max(#correct, #incorrect)`` demonstrations, pairing them in turn (the shorter list cycles).

    Measured on SmolLM2-135M-Instruct (``benchmarks/sea_truthfulqa.py``, 2-fold CV on the development
    split, layers 10-29): ``"all"`` (1,785 demonstrations) changed nothing (dMC1 -0.002 at K 99.8%,
    +0.002 at K 99%) where ``"best"`` gave +0.045. The uncentred cross-covariances of Eq. 1 are dominated
    by the direction all activations share, kept ranks fall to 1-2, and with more demonstrations the
    kept positive and removed negative directions coincide, so the edit tends to the identity.
    """
    if answers not in ("best", "all"):
        raise ValueError(f"answers must be 'best' or 'all', not {answers!r}")
    g = torch.Generator().manual_seed(seed)
    prompts, pos, neg = [], [], []
    for r in rows:
        if answers == "best":
            prompts.append(r["question"])
            pos.append(r["best"])
            neg.append(r["incorrect"][int(torch.randint(len(r["incorrect"]), (1,), generator=g))])
            continue
        good = r.get("correct") or [r["best"]]
        bad = r["incorrect"]
        for i in range(max(len(good), len(bad))):
            prompts.append(r["question"])
            pos.append(good[i % len(good)])
            neg.append(bad[i % len(bad)])
    return Demonstrations(prompts, pos, neg, chat=True)


def pair_demonstrations(positive: Sequence[str], negative: Sequence[str]) -> Demonstrations:
    """From contrastive sentence pairs: the shared word prefix is the (raw) prompt, the rest the answers. A
    pair that shares no first word has an empty prompt (its texts are the two sentences as written; its
    neutral answer is the model's text from the start token)."""
    prompts, pos, neg = [], [], []
    for p, n in zip(positive, negative, strict=True):
        pw, nw = p.split(), n.split()
        k = 0
        while k < min(len(pw), len(nw)) - 1 and pw[k] == nw[k]:
            k += 1
        prompts.append(" ".join(pw[:k]))
        pos.append(" ".join(pw[k:]))
        neg.append(" ".join(nw[k:]))
    return Demonstrations(prompts, pos, neg, chat=False)


def facts_demonstrations(statements: Sequence[str], labels: Sequence[int], seed: int = 0) -> Demonstrations:
    """From true/false statements: pair each true statement with a false one; prompt asks for a fact."""
    true = [s for s, lab in zip(statements, labels, strict=True) if int(lab) == 1]
    false = [s for s, lab in zip(statements, labels, strict=True) if int(lab) == 0]
    n = min(len(true), len(false))
    if n == 0:
        raise ValueError("Need both true (1) and false (0) statements")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(false), generator=g)[:n].tolist()
    prompts = ["Tell me one true fact about the world."] * n
    return Demonstrations(prompts, true[:n], [false[i] for i in order], chat=True)

