"""RE-Control: representation editing from a control perspective (Kong et al., NeurIPS 2024, arXiv 2406.05954).

The LM is a dynamical system whose state ``s_t`` is the vector fed to the unembedding at step t (here
``ln_final.hook_normalized``, the final norm's output before its gain). A value function ``V(s)`` is
trained to predict the reward of the finished response (paper Eq. 6, undiscounted TD, reward only at
the end):

    V(s_t) -> stopgrad V(s_{t+1})   for t < T-1,        V(s_{T-1}) -> r

At test time the state that produces the next token is pushed uphill (paper Eq. 7):

    u = 0;  repeat n times: u <- u + alpha * grad_s V(s + u);  feed s + u to the unembedding

Unlike the reference code: the TD target is detached, the terminal reward sits at the last real step,
and the gradient steps run only at the position that produces the next token (not over the prompt).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..editing import Editor, HookFn, ModelSpec, register
from ..files import atomic_file
from ..generation import encode, format_chat, generate_tokens

STATE_HOOK = "ln_final.hook_normalized"
RewardFn = Callable[[Sequence[str]], Sequence[float]]


# -- rewards --------------------------------------------------------------------------------------------
def sentiment_reward() -> RewardFn:
    """VADER compound sentiment in [-1, 1] (needs ``vaderSentiment``)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyser = SentimentIntensityAnalyzer()
    return lambda texts: [analyser.polarity_scores(t)["compound"] for t in texts]


def non_offensive_reward() -> RewardFn:
    """1 - offensive-language probability from ``alt-profanity-check``."""
    from profanity_check import predict_prob

    return lambda texts: [1.0 - float(p) for p in predict_prob(list(texts))]


# -- rollouts -------------------------------------------------------------------------------------------
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
            system: str | None = None, progress: bool = True) -> Rollouts:
    """Generate responses and record the state feeding the unembedding at every generated step.

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
            # generate_tokens runs the final norm on the last position only: one state per step
            steps.append(act[:, -1].detach().float().cpu())

        with model.hooks(fwd_hooks=[(STATE_HOOK, record)]):
            ids = generate_tokens(model, tokens, mask, max_new_tokens, do_sample, temperature, seed=seed + start)
        stacked = torch.stack(steps, dim=1)  # [b, steps, d]
        for i, row in enumerate(ids):
            n = min(len(row) + 1, stacked.shape[1])  # the step that produced the end token counts too
            states.append(stacked[i, :n])
            responses.append(model.tokenizer.decode(row, skip_special_tokens=True))
    return Rollouts(list(prompts), responses, states)


@torch.no_grad()
def teacher_forced(model: Any, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16,
                   progress: bool = True) -> Rollouts:
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
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=STATE_HOOK)
        s = cache[STATE_HOOK].float().cpu()
        for i, a in enumerate(a_ids):
            states.append(s[i, width - len(a) - 1:])
    return Rollouts(list(prompts), list(answers), states)


def pack(states: Sequence[torch.Tensor]) -> tuple[Float[torch.Tensor, "b t d"], Bool[torch.Tensor, "b t"]]:
    """Right-pad variable-length episodes into a batch with a mask of real steps."""
    t = max(len(s) for s in states)
    x = torch.zeros(len(states), t, states[0].shape[-1])
    mask = torch.zeros(len(states), t, dtype=torch.bool)
    for i, s in enumerate(states):
        x[i, :len(s)] = s
        mask[i, :len(s)] = True
    return x, mask


def td_targets(values: Float[torch.Tensor, "b t"], mask: Bool[torch.Tensor, "b t"],
               rewards: Float[torch.Tensor, " b"]) -> Float[torch.Tensor, "b t"]:
    """Undiscounted TD(0) targets with the reward at the last real step (paper Eq. 6); detached.

    ``target[t] = V(s_{t+1})`` while step t+1 is real; ``target[last] = r``; padded steps give 0.
    """
    values = values.detach()
    nxt = torch.zeros_like(values)
    nxt[:, :-1] = values[:, 1:]
    last = mask.sum(1) - 1
    if torch.any(last < 0):
        raise ValueError("Every episode needs at least one step")
    has_next = torch.zeros_like(mask)
    has_next[:, :-1] = mask[:, 1:]
    target = torch.where(has_next, nxt, torch.zeros_like(nxt))
    target[torch.arange(len(last)), last] = rewards.to(target.dtype)
    return target * mask


class ValueFunction(nn.Module):
    """MLP value head ``V: R^d -> R`` with ReLU (paper: 2-3 layers)."""

    def __init__(self, d_model: int, hidden: int = 256, n_layers: int = 2):
        super().__init__()
        dims = [d_model] + [hidden] * (n_layers - 1)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*layers)
        self.config = {"d_model": d_model, "hidden": hidden, "n_layers": n_layers}

    def forward(self, s: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        return self.net(s).squeeze(-1)


def split_by_prompt(prompts: Sequence[str], val_fraction: float, generator: torch.Generator,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Episode indices (train, val) with every prompt's episodes on one side only: with several samples
    per prompt, a split by episode would validate on prompts the value net was trained on."""
    names = list(dict.fromkeys(prompts))
    order = torch.randperm(len(names), generator=generator).tolist()
    n_val = int(round(val_fraction * len(names))) if len(names) > 4 else 0
    held = {names[i] for i in order[:n_val]}
    val = torch.tensor([i for i, p in enumerate(prompts) if p in held], dtype=torch.long)
    train = torch.tensor([i for i, p in enumerate(prompts) if p not in held], dtype=torch.long)
    return train[torch.randperm(len(train), generator=generator)], val


def td_loss(values: Float[torch.Tensor, "b t"], mask: Bool[torch.Tensor, "b t"],
            rewards: Float[torch.Tensor, " b"]) -> torch.Tensor:
    """Mean squared TD error over the real steps (paper Eq. 6), against ``td_targets``."""
    return (((values - td_targets(values, mask, rewards)) ** 2) * mask).sum() / mask.sum()


def train_value(rollouts: Rollouts, hidden: int = 256, n_layers: int = 2, epochs: int = 30, lr: float = 1e-3,
                batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0, keep_best: bool = False,
                progress: bool = True) -> tuple[ValueFunction, dict[str, Any]]:
    """TD training (paper Eq. 6) with a validation split by prompt; returns the value function and curves.

    ``curves``: ``train`` and ``val`` TD losses per epoch, ``val_episodes`` (the indices of the validation
    episodes), and ``val_corr``, the correlation between
    V(s_t) and the episode's reward over every real step of the validation episodes. The validation
    episodes come from held-out prompts (none when there are fewer than 5 distinct prompts), so ``val_corr``
    says whether V predicts the reward on prompts it has not seen, which is what test-time control needs.
    With ``keep_best`` (and a validation split) the returned net is the one after the epoch with the lowest
    validation TD loss (early stopping; ``curves["best_epoch"]``, counted from 0), not the last one. It is off
    by default: on the sentiment benchmark the early-stopped net predicted the reward better on held-out
    prompts (correlation 0.42 against 0.37) but steered worse (-0.02 VADER against +0.17 at alpha 8,
    ``max_norm`` 4), so a lower validation loss does not mean a more useful gradient.
    """
    if len(rollouts.rewards) != len(rollouts.states):
        raise ValueError("Rollouts need one reward per response: score them first")
    if not rollouts.states:
        raise ValueError("No episodes to train on")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, mask = pack(rollouts.states)
    r = torch.tensor(rollouts.rewards, dtype=torch.float32)
    if not torch.isfinite(r).all() or not torch.isfinite(x).all():
        raise ValueError("Rewards and states must be finite: check the reward function and the rollouts")
    train, val = split_by_prompt(rollouts.prompts, val_fraction, g)
    vf = ValueFunction(x.shape[-1], hidden, n_layers)
    opt = torch.optim.Adam(vf.parameters(), lr=lr)
    curves: dict[str, Any] = {"train": [], "val": [], "val_corr": [], "val_episodes": val.tolist(),
                              "best_epoch": None}
    best: dict[str, torch.Tensor] | None = None

    def loss_on(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = vf(x[idx])
        return td_loss(v, mask[idx], r[idx]), v

    for epoch in tqdm(range(epochs), desc="value training", disable=not progress):
        order = train[torch.randperm(len(train), generator=g)]
        total = 0.0
        for i in range(0, len(order), batch_size):
            loss, _ = loss_on(order[i:i + batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(order[i:i + batch_size])
        curves["train"].append(total / max(1, len(order)))
        if len(val):
            with torch.no_grad():
                loss, v = loss_on(val)
                m = mask[val]
                pairs = torch.stack([v[m], r[val, None].expand_as(m)[m]])  # V(s_t) and its episode's reward
                curves["val"].append(float(loss))
                curves["val_corr"].append(float(torch.corrcoef(pairs)[0, 1]))
            if keep_best and curves["val"][-1] <= min(curves["val"]):
                best = {k: t.clone() for k, t in vf.state_dict().items()}
                curves["best_epoch"] = epoch
    if best is not None:
        vf.load_state_dict(best)
    return vf.eval(), curves


# -- the controller -------------------------------------------------------------------------------------
def gradient_ascent(vf: ValueFunction, s: Float[torch.Tensor, "b d"], alpha: float, n_steps: int,
                    max_norm: float | None = None, path: list[torch.Tensor] | None = None,
                    ) -> tuple[Float[torch.Tensor, "b d"], list[torch.Tensor]]:
    """``u <- u + alpha * grad V(s + u)``, n times (paper Eq. 7); optional bound ``||u|| <= max_norm``.

    Returns the control ``u`` and the values along the way (for trajectory plots); each iterate of
    ``u`` is appended to ``path`` when one is given.
    """
    u = torch.zeros_like(s)
    trace = []
    if path is not None:
        path.append(u)
    with torch.enable_grad():
        for _ in range(n_steps):
            u = u.detach().requires_grad_(True)
            v = vf(s.detach() + u)
            trace.append(v.detach())
            (grad,) = torch.autograd.grad(v.sum(), u)
            u = u + alpha * grad
            if max_norm is not None:
                norm = u.norm(dim=-1, keepdim=True)
                u = u * (max_norm / norm.clamp_min(1e-12)).clamp(max=1.0)
            if path is not None:
                path.append(u.detach())
    u = u.detach()
    with torch.no_grad():
        trace.append(vf(s + u))
    return u, trace


@register
class ValueController(Editor):
    """Gradient ascent on the value function at the position that produces the next token.

    Settings: ``alpha``, ``n_steps``, ``max_norm`` (optional bound on ``||u||``), ``hidden``,
    ``n_layers`` (value net shape). Tensors: the value net's parameters (``vf.*``).
    """

    method = "recontrol"

    @classmethod
    def from_value(cls, model: Any, vf: ValueFunction, alpha: float = 0.5, n_steps: int = 10,
                   max_norm: float | None = None, positions: str = "last") -> ValueController:
        """``positions="last"`` (generation: only the position producing the next token) or ``"all"``
        (scoring given text, e.g. TruthfulQA answers, where every position's logits are used)."""
        if positions not in ("last", "all"):
            raise ValueError(f"positions must be 'last' or 'all', not {positions!r}")
        spec = ModelSpec.of(model)
        if vf.config["d_model"] != spec.d_model:
            raise ValueError(f"Value function takes d_model={vf.config['d_model']}, model has {spec.d_model}")
        tensors = {f"vf.{k}": v.detach().clone() for k, v in vf.state_dict().items()}
        settings = {"alpha": alpha, "n_steps": n_steps, "max_norm": max_norm, "hidden": vf.config["hidden"],
                    "n_layers": vf.config["n_layers"], "positions": positions}
        return cls(model=spec, layers=[spec.n_layers - 1], settings=settings, tensors=tensors)

    def value_function(self) -> ValueFunction:
        cache = self.__dict__.setdefault("_vf", {})
        device = self.tensors["vf.net.0.weight"].device
        if "vf" not in cache or next(cache["vf"].parameters()).device != device:
            vf = ValueFunction(self.model.d_model, self.settings["hidden"], self.settings["n_layers"])
            vf.load_state_dict({k[3:]: v for k, v in self.tensors.items() if k.startswith("vf.")})
            cache["vf"] = vf.to(device).eval()
        return cache["vf"]

    def hook_name(self, layer: int) -> str:
        return STATE_HOOK

    def hook_fn(self, layer: int) -> HookFn:
        def control(act: torch.Tensor, hook: Any) -> torch.Tensor:
            s = self.settings
            if s["alpha"] == 0 or s["n_steps"] == 0:
                return act
            if s.get("positions", "last") == "all":
                flat = act.reshape(-1, act.shape[-1]).float()
                u, _ = gradient_ascent(self.value_function(), flat, s["alpha"], s["n_steps"], s["max_norm"])
                return act + u.reshape(act.shape).to(act.dtype)
            u, _ = gradient_ascent(self.value_function(), act[:, -1].float(), s["alpha"], s["n_steps"],
                                   s["max_norm"])
            out = act.clone()
            out[:, -1] = act[:, -1] + u.to(act.dtype)
            return out
        return control


    def explain(self, model: Any, context: str, answer: str) -> str:
        """V before and after the ascent, and the control's size, averaged over the answer's states."""
        tokens, mask = encode(model, [context + answer])
        n_ctx = encode(model, [context])[0].shape[1]
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=STATE_HOOK)
        states = cache[STATE_HOOK][0, max(n_ctx - 1, 0):-1].float()  # the states that produced the answer
        s = self.settings
        u, trace = gradient_ascent(self.value_function(), states, s["alpha"], s["n_steps"], s["max_norm"])
        before, after = float(trace[0].mean()), float(trace[-1].mean())
        share = float((u.norm(dim=-1) / states.norm(dim=-1).clamp_min(1e-12)).mean())
        return (f"value V(s) {before:+.3f} -> {after:+.3f} after {s['n_steps']} ascent steps; control |u| = "
                f"{100 * share:.1f}% of |s| (mean over the answer's final states)")


# -- analysis -------------------------------------------------------------------------------------------
@torch.no_grad()
def value_lens(model: Any, controller: ValueController,
               text: str) -> tuple[Float[torch.Tensor, "layers pos"], list[str]]:
    """V read at every layer and token: each block's residual output, RMS-normalised like the final norm
    does (a logit-lens reading; the value net was trained on the last layer's normalised state), then V.

    Returns (values [n_layers + 1, tokens]: rows are the blocks' outputs then the final state; labels).
    """
    tokens, mask = encode(model, [text])
    names = [f"blocks.{la}.hook_resid_post" for la in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: n in names or n == STATE_HOOK)
    vf = controller.value_function()
    rows = []
    for name in names:
        x = cache[name][0].float()
        rows.append(vf(x / x.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()))
    rows.append(vf(cache[STATE_HOOK][0].float()))
    labels = [model.tokenizer.decode([t]) for t in tokens[0].tolist()]
    return torch.stack(rows).cpu(), labels


@torch.no_grad()
def value_landscape(controller: ValueController, s: Float[torch.Tensor, " d"], span: float | None = None,
                    steps: int = 41, seed: int = 0) -> dict[str, torch.Tensor]:
    """V on the plane through ``s`` spanned by the unit gradient of V and a random unit direction
    orthogonal to it; ``span`` sets the extent (default: 1.5x the controller's own edit size).

    Returns ``a`` (offsets along the gradient), ``b`` (along the random direction), ``values``
    [steps (a), steps (b)], the ascent ``path`` in (a, b) coordinates and V at each step."""
    vf = controller.value_function()
    s = s.float()
    with torch.enable_grad():
        x = s.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(vf(x), x)
    g_unit = g / g.norm().clamp_min(1e-12)
    r = torch.randn(s.shape, generator=torch.Generator().manual_seed(seed))
    r = r - (r @ g_unit) * g_unit
    r = r / r.norm()
    st = controller.settings
    iterates: list[torch.Tensor] = []
    u, trace = gradient_ascent(vf, s[None], st["alpha"], st["n_steps"], st["max_norm"], path=iterates)
    reach = max(float(u.norm()) * 1.5, 1e-3) if span is None else span
    a = torch.linspace(-reach, reach, steps)
    grid = s + a[:, None, None] * g_unit + a[None, :, None] * r
    values = vf(grid.reshape(-1, s.shape[0])).reshape(steps, steps)
    path = torch.stack([torch.stack([x[0] @ g_unit, x[0] @ r]) for x in iterates])
    return {"a": a, "b": a.clone(), "values": values, "path": path, "path_values": torch.cat(trace), "state": s}


def control_token_effect(model: Any, controller: ValueController, states: Float[torch.Tensor, "n d"],
                         k: int = 20) -> dict[str, Any]:
    """Which next tokens the control favours: the change of every logit per unit step along the unit
    gradient of V, ``(g/||g|| * w_ln) @ W_U``, averaged over ``states`` (exact: the map from the state to
    the logits is affine). Returns ``delta`` [vocab] and the ``k`` most raised and most lowered tokens as
    ``(token, delta)`` pairs.

    A value net that learned the reward well raises reward-carrying words (sentiment: "compliment",
    "relax"); large moves on rare sub-word tokens explain perplexity rising before the reward does.
    """
    vf = controller.value_function()
    if states.ndim != 2 or states.shape[-1] != controller.model.d_model:
        raise ValueError(f"states must be [n, {controller.model.d_model}], got {tuple(states.shape)}")
    with torch.enable_grad():
        x = states.float().detach().requires_grad_(True)
        (g,) = torch.autograd.grad(vf(x).sum(), x)
    with torch.no_grad():
        g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        gain = getattr(model.ln_final, "w", None)
        if gain is not None:
            g = g * gain.float()
        delta = (g @ model.W_U.float()).mean(0)
    name = lambda i: model.tokenizer.decode([int(i)]) if model.tokenizer is not None else str(int(i))  # noqa: E731
    up, down = delta.topk(min(k, len(delta))), (-delta).topk(min(k, len(delta)))
    return {"delta": delta,
            "raised": [(name(i), float(v)) for v, i in zip(up.values, up.indices, strict=True)],
            "lowered": [(name(i), -float(v)) for v, i in zip(down.values, down.indices, strict=True)]}
