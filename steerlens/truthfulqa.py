"""TruthfulQA multiple-choice scoring (MC1, MC2) for any model, steered or not, on the official CSV columns.

Each answer is scored by its summed log-probability given the question, asked with the model's chat
template (Lin et al. 2022 score answers the same way, with their QA prompt). MC1: 1 when the best
answer scores highest among the best and the incorrect answers. MC2: the normalised probability mass
of the correct answers (``Correct Answers`` plus ``Best Answer``) against the incorrect ones.

Cost: each question's prompt runs once (several questions' prompts in one left-padded batch); its keys and
values are then shared by all its answer choices (every answer of those questions in one batch), and the
unembedding runs only at answer tokens. ``benchmarks/mc_speed.py`` compares it with one forward pass over the
same tokens.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .generation import check_context, format_chat

COLUMNS = ("Question", "Best Answer", "Correct Answers", "Incorrect Answers")


def _split(cell: str) -> list[str]:
    return [a.strip() for a in cell.split(";") if a.strip()]


def load_truthfulqa(path: str | Path) -> list[dict[str, Any]]:
    """Rows ``{"question", "best", "correct", "incorrect", "category"}`` from a CSV with the official columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such TruthfulQA CSV: {path}")
    try:
        text = path.read_bytes().decode("utf-8")  # no newline translation: the csv module reads quoted \r
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the TruthfulQA column(s) {missing}; found {reader.fieldnames}")
        rows = []
        for i, r in enumerate(reader, 2):
            best, incorrect = r["Best Answer"].strip(), _split(r["Incorrect Answers"])
            if not r["Question"].strip() or not best or not incorrect:
                raise ValueError(f"{path}:{i}: needs a question, a best answer and at least one incorrect answer")
            correct = list(dict.fromkeys([best, *_split(r["Correct Answers"])]))
            rows.append({"question": r["Question"].strip(), "best": best, "correct": correct,
                         "incorrect": incorrect, "category": r.get("Category", "")})
    if not rows:
        raise ValueError(f"{path} holds no questions")
    return rows


ANSWER_ROWS = 32  # answers per forward pass when scoring (benchmarks/mc_speed.py)


def _answer_ids(tok: Any, prompt: str, answers: Sequence[str]) -> list[list[int]]:
    return [tok(" " + a if not prompt.endswith((" ", "\n")) else a, add_special_tokens=False)["input_ids"]
            for a in answers]


@torch.no_grad()
def answer_logprobs(model: Any, prompt: str, answers: Sequence[str], mean: bool = False) -> torch.Tensor:
    """Summed log-probability of each answer continuing ``prompt`` (a full text, template applied); with
    ``mean=True`` the mean per answer token (length-normalised)."""
    return batch_answer_logprobs(model, [prompt], [answers], mean=mean)[0]


@torch.no_grad()
def batch_answer_logprobs(model: Any, prompts: Sequence[str], answers: Sequence[Sequence[str]],
                          mean: bool = False) -> list[torch.Tensor]:
    """``answer_logprobs`` for several questions at once: their prompts run as one left-padded batch, whose
    keys and values are then shared by every answer of the same question (the answers of all the questions in
    right-padded, length-sorted chunks of ``ANSWER_ROWS``). Only the answer tokens are unembedded."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    tok = model.tokenizer
    device = next(model.parameters()).device
    p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    a_ids = [_answer_ids(tok, p, a) for p, a in zip(prompts, answers, strict=True)]
    if any(len(a) == 0 for a in a_ids) or any(len(x) == 0 for a in a_ids for x in a):
        raise ValueError("Every question needs at least one non-empty answer")
    check_context(model, [len(p) + max(len(x) for x in a) for p, a in zip(p_ids, a_ids, strict=True)], 0,
                  [f"The question {p[-60:]!r} with its longest answer" for p in prompts])
    g, p_len = len(prompts), max(len(p) for p in p_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((g, p_len), pad, dtype=torch.long, device=device)
    mask = torch.zeros((g, p_len), dtype=torch.long, device=device)
    for i, p in enumerate(p_ids):  # left padding: every prompt ends at the last column
        ids[i, p_len - len(p):] = torch.tensor(p, device=device)
        mask[i, p_len - len(p):] = 1
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, g)
    resid = model(ids, attention_mask=mask, past_kv_cache=cache, stop_at_layer=model.cfg.n_layers)
    first = model.unembed(model.ln_final(resid[:, -1:]))[:, -1].log_softmax(-1)  # [g, vocab]
    owner = torch.tensor([i for i, a in enumerate(a_ids) for _ in a], device=device)
    prefix = [(entry.past_keys, entry.past_values) for entry in cache.entries]
    prefix_mask = cache.previous_attention_mask
    cache.freeze()
    flat = [x for a in a_ids for x in a]
    lengths = torch.tensor([len(x) for x in flat], device=device)
    scores = first[owner, torch.tensor([x[0] for x in flat], device=device)].double()
    # Answers of similar length run together (length-sorted chunks), so little of the batch is padding; each
    # chunk's rows read their own question's keys and values.
    by_length = sorted((i for i, x in enumerate(flat) if len(x) > 1), key=lambda i: len(flat[i]))
    for start in range(0, len(by_length), ANSWER_ROWS):
        rows = torch.tensor(by_length[start:start + ANSWER_ROWS], device=device)
        own = owner[rows]
        for entry, (keys, values) in zip(cache.entries, prefix, strict=True):
            entry.past_keys, entry.past_values = keys[own], values[own]
        cache.previous_attention_mask = prefix_mask[own]
        width = int(lengths[rows].max())
        # Right-pad the answers: padding sits after every real token, so causality keeps it out of the scores.
        ans = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
        for j, i in enumerate(rows.tolist()):
            ans[j, :len(flat[i])] = torch.tensor(flat[i], device=device)
        real = torch.arange(width, device=device)[None] < lengths[rows][:, None]
        resid = model(ans, attention_mask=torch.ones_like(ans), past_kv_cache=cache,
                      stop_at_layer=model.cfg.n_layers)
        scored = real[:, 1:]  # the state before each answer token after the first
        logp = model.unembed(model.ln_final(resid[:, :-1][scored][None]))[0].log_softmax(-1)
        picked = logp.gather(-1, ans[:, 1:][scored][:, None])[:, 0].double()
        scores = scores.index_add(0, rows[scored.nonzero()[:, 0]], picked)
    if mean:
        scores = scores / lengths
    scores = scores.float().cpu()
    return list(scores.split([len(a) for a in a_ids]))


def score_truthfulqa(model: Any, rows: Sequence[dict[str, Any]], system: str | None = None,
                     progress: bool = True, batch_size: int = 16) -> dict[str, Any]:
    """MC1 and MC2 (means over questions) plus per-question values, for the model as it is (hooks included)."""
    if len(rows) == 0:
        raise ValueError("No TruthfulQA questions to score")
    mc1, mc2 = [0.0] * len(rows), [0.0] * len(rows)
    prompts = [format_chat(model.tokenizer, r["question"], system) for r in rows]
    # questions of similar prompt length share a batch (little padding); results go back in row order
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
    bar = tqdm(total=len(rows), desc="truthfulqa", disable=not progress, leave=False)
    for start in range(0, len(rows), batch_size):
        chunk = order[start:start + batch_size]
        scored = batch_answer_logprobs(model, [prompts[i] for i in chunk],
                                       [[rows[i]["best"], *rows[i]["incorrect"], *rows[i]["correct"]] for i in chunk])
        for i, s in zip(chunk, scored, strict=True):
            n_false = len(rows[i]["incorrect"])
            best, wrong, right = s[0], s[1:1 + n_false], s[1 + n_false:]
            mc1[i] = float(best > wrong.max())
            p = torch.cat([right, wrong]).double().softmax(0)
            mc2[i] = float(p[:len(right)].sum())
        bar.update(len(chunk))
    bar.close()
    return {"mc1": sum(mc1) / len(mc1), "mc2": sum(mc2) / len(mc2), "per_question": {"mc1": mc1, "mc2": mc2}}
