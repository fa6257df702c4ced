"""Offline evaluators: offensive-language probability, sentiment, fluency, diversity, length.

- ``offensive_prob``: ``alt-profanity-check``'s probability that a text is offensive.
- ``vader_compound``: VADER's compound sentiment in [-1, 1].
- ``perplexity``: of the responses under a model (call it on the *unsteered* model: no hooks), corpus
  level, ``exp(total NLL / total response tokens)``.
- ``diversity``: ``prod_{n=2..4} (1 - rep_n)`` per response, averaged (RE-Control, Sec. 5), with
  ``rep_n = 1 - unique n-grams / n-grams`` over whitespace words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .generation import left_pad

# The modules of the ``eval`` extra (``pip install "steerlens[eval]"``): module -> its PyPI name.
EVAL_MODULES = {"profanity_check": "alt-profanity-check", "vaderSentiment": "vaderSentiment",
                "sklearn": "scikit-learn"}


class MissingExtra(ValueError):
    """An optional dependency a command needs is not installed (the message says what to install)."""


def require_evaluators(what: str = "this command") -> None:
    """Refuse, in one line and before any work, when the offline evaluators (the ``eval`` extra) are missing."""
    import importlib.util

    missing = [pkg for mod, pkg in EVAL_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise MissingExtra(f"{what} scores text with the offline evaluators, which are not installed "
                           f"({', '.join(missing)}): run  pip install \"steerlens[eval]\"")


def offensive_prob(texts: Sequence[str]) -> list[float]:
    from profanity_check import predict_prob

    return [float(p) for p in predict_prob(list(texts))] if texts else []


def vader_compound(texts: Sequence[str]) -> list[float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyser = SentimentIntensityAnalyzer()
    return [analyser.polarity_scores(t)["compound"] for t in texts]


def distinct_ratio(words: Sequence[str], n: int) -> float:
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def diversity(texts: Sequence[str]) -> float:
    """Mean over responses of ``prod_{n=2..4} (1 - rep_n)``; 1 means no repeated n-gram."""
    if not texts:
        raise ValueError("No texts")
    scores = []
    for t in texts:
        words = t.split()
        d = 1.0
        for n in (2, 3, 4):
            d *= distinct_ratio(words, n)
        scores.append(d)
    return sum(scores) / len(scores)


@torch.no_grad()
def response_nll(model: Any, contexts: Sequence[str], responses: Sequence[str],
                 batch_size: int = 8) -> tuple[list[float], list[int]]:
    """Summed negative log-likelihood of each response given its context, and its token count."""
    if len(contexts) != len(responses):
        raise ValueError("contexts and responses differ in length")
    tok = model.tokenizer
    nll, counts = [], []
    for start in range(0, len(contexts), batch_size):
        ids, spans = [], []
        for c, r in zip(contexts[start:start + batch_size], responses[start:start + batch_size], strict=True):
            c_ids = tok(c, add_special_tokens=False)["input_ids"]
            r_ids = tok(r, add_special_tokens=False)["input_ids"]
            ids.append(c_ids + r_ids)
            spans.append(len(r_ids))
        tokens, mask = left_pad(ids, tok.pad_token_id, next(model.parameters()).device)
        logp = model(tokens, attention_mask=mask).log_softmax(-1)
        nxt = logp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        for i, n in enumerate(spans):
            nll.append(-float(nxt[i, nxt.shape[1] - n:].sum()) if n else 0.0)
            counts.append(n)
    return nll, counts


def perplexity(model: Any, contexts: Sequence[str], responses: Sequence[str]) -> float:
    """Corpus perplexity of the responses given their contexts (empty responses count no tokens)."""
    nll, counts = response_nll(model, contexts, responses)
    total = sum(counts)
    if total == 0:
        return float("nan")
    return float(torch.tensor(sum(nll) / total).exp())


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def text_metrics(model: Any, contexts: Sequence[str], responses: Sequence[str]) -> dict[str, float]:
    """All text metrics of ``steerlens eval`` for one set of responses (``model`` must be unsteered)."""
    return {
        "offensive_prob": mean(offensive_prob(responses)),
        "vader_compound": mean(vader_compound(responses)),
        "perplexity": perplexity(model, contexts, responses),
        "diversity": diversity(responses),
        "length": mean([len(r.split()) for r in responses]),
    }
