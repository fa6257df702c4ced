"""Rollouts: sampled (or given) responses with the model's state at one hook for every generated step, and a
reward per response. What a value-based method (RE-Control) learns from; a task scores them
(``steerlens.tasks.Task.rollouts``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .files import atomic_file
from .generation import encode, format_chat, generate_tokens

# the state that feeds the unembedding (the final norm's output before its gain)
STATE_HOOK = "ln_final.hook_normalized"


@dataclass
class Rollouts:
    """Generated responses with the state at every generated step and one reward per response."""

    prompts: list[str]
    responses: list[str]
    states: list[Float[torch.Tensor, "steps d"]]
    rewards: list[float] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        """``states.safetensors`` then ``rollouts.json`` (which ``load`` looks for), each renamed into place."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "rollouts.json").unlink(missing_ok=True)
        with atomic_file(path / "states.safetensors") as tmp:
            save_file({f"s{i}": s.contiguous() for i, s in enumerate(self.states)}, str(tmp))
        with atomic_file(path / "rollouts.json") as tmp:
            tmp.write_text(json.dumps({"prompts": self.prompts, "responses": self.responses,
                                       "rewards": self.rewards}))
        return path

    @classmethod
    def concat(cls, parts: Sequence[Rollouts]) -> Rollouts:
        """One set of rollouts from several, in order; rewards are kept only if every part has them."""
        scored = all(len(r.rewards) == len(r.states) for r in parts)
        return cls([p for r in parts for p in r.prompts], [x for r in parts for x in r.responses],
                   [x for r in parts for x in r.states], [x for r in parts for x in r.rewards] if scored else [])

    @classmethod
    def load(cls, path: str | Path) -> Rollouts:
        path = Path(path)
        meta = json.loads((path / "rollouts.json").read_text())
        t = load_file(str(path / "states.safetensors"))
        return cls(meta["prompts"], meta["responses"], [t[f"s{i}"] for i in range(len(t))], meta["rewards"])


@torch.no_grad()
def rollout(model: Any, prompts: Sequence[str], max_new_tokens: int = 48, chat: bool = True,
            do_sample: bool = True, temperature: float = 1.0, seed: int = 0, batch_size: int = 16,
            system: str | None = None, progress: bool = True, hook: str = STATE_HOOK) -> Rollouts:
    """Generate responses and record the state at ``hook`` (default: the one feeding the unembedding, after the
    final norm) at every generated step: the state of the position that produced each new token.

    ``system`` (chat only) rolls out under a system prompt: a behaviour policy other than the model's
    own, which widens the rewards the value net sees (e.g. a cheerful and a gloomy assistant). Only the
    generated steps are recorded, and ``prompts`` keeps the user prompts, so a prompt's episodes under
    every behaviour fall on the same side of the validation split.
    """
    if not prompts:
        raise ValueError("No prompts to roll out")
    if system is not None and not chat:
        raise ValueError("A system prompt needs chat=True: raw text has no system turn")
    texts = [format_chat(model.tokenizer, p, system=system) if chat else p for p in prompts]
    states: list[torch.Tensor] = []
    responses: list[str] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="rollouts", disable=not progress, unit="batch"):
        tokens, mask = encode(model, texts[start:start + batch_size])
        steps: list[torch.Tensor] = []

        def record(act: torch.Tensor, hook: Any, steps: list[torch.Tensor] = steps) -> None:
            # one call per decoding step (the prompt's pass, then one new position each): its last position
            steps.append(act[:, -1].detach().float().cpu())

        with model.hooks(fwd_hooks=[(hook, record)]):
            ids = generate_tokens(model, tokens, mask, max_new_tokens, do_sample, temperature, seed=seed + start)
        stacked = torch.stack(steps, dim=1)  # [b, steps, d]
        for i, row in enumerate(ids):
            n = min(len(row) + 1, stacked.shape[1])  # the step that produced the end token counts too
            states.append(stacked[i, :n])
            responses.append(model.tokenizer.decode(row, skip_special_tokens=True))
    return Rollouts(list(prompts), responses, states)


@torch.no_grad()
def teacher_forced(model: Any, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16,
                   progress: bool = True, hook: str = STATE_HOOK) -> Rollouts:
    """Episodes from given answers instead of sampled ones: the states that produce each answer token
    (and the one after it) when ``prompt + answer`` is read in one pass. ``prompts`` are full texts."""
    if len(prompts) != len(answers) or not prompts:
        raise ValueError("Need one answer per prompt, and at least one")
    tok = model.tokenizer
    states = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="teacher forcing", disable=not progress):
        p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[start:start + batch_size]]
        a_ids = [tok(a, add_special_tokens=False)["input_ids"] for a in answers[start:start + batch_size]]
        ids = [p + a for p, a in zip(p_ids, a_ids, strict=True)]
        width = max(len(x) for x in ids)
        pad = tok.pad_token_id
        device = next(model.parameters()).device
        tokens = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=hook)
        s = cache[hook].float().cpu()
        for i, a in enumerate(a_ids):
            states.append(s[i, width - len(a) - 1:])
    return Rollouts(list(prompts), list(answers), states)
