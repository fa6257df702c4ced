"""RE-Control: representation editing from a control perspective (Kong et al., NeurIPS 2024, arXiv 2406.05954).

The LM is a dynamical system whose state ``s_t`` is the vector fed to the unembedding at step t (here
``ln_final.hook_normalized``, the final norm's output before its gain), or, with ``placement="resid"``, the
residual stream after block L (``blocks.L.hook_resid_post``, a departure from the paper: see
``ValueController``). A value function ``V(s)`` is
trained to predict the reward of the finished response (paper Eq. 6, undiscounted TD, reward only at
the end):

    V(s_t) -> stopgrad V(s_{t+1})   for t < T-1,        V(s_{T-1}) -> r

At test time the state that produces the next token is pushed uphill (paper Eq. 7):

    u = 0;  repeat n times: u <- u + alpha * grad_s V(s + u);  feed s + u to the unembedding

Unlike the reference code: the TD target is detached, the terminal reward sits at the last real step,
and the gradient steps run only at the position that produces the next token (not over the prompt).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import nn
from tqdm.auto import tqdm

from ..activations import rms_normalise
from ..context import current_span
from ..editing import Editor, HookFn, ModelSpec, TensorSpec, check_layers, checked_settings, register, resid_hook_name
from ..generation import encode, format_chat
from ..rollouts import STATE_HOOK, Rollouts, rollout, teacher_forced  # noqa: F401  (re-exported)
from ..settings import Setting

PLACEMENTS = ("normalized", "output", "resid")
# Sentiment's settings with the paper's placement (the final state) at the size its default used before the
# residual placement: shipped beside the default, so notebook 04 compares the two without fitting
FINAL_STATE_SENTIMENT = {"placement": "normalized", "layer": None, "alpha": 0.025, "max_norm": 0.125}
RewardFn = Callable[[Sequence[str]], Sequence[float]]


def final_gain(model: Any) -> Float[torch.Tensor, " d"]:
    """The final norm's gain (ones when the model has none, e.g. with the norm folded into the unembedding)."""
    w = getattr(model.ln_final, "w", None)
    return torch.ones(model.cfg.d_model) if w is None else w.detach().float().cpu()


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


def mc_targets(mask: Bool[torch.Tensor, "b t"], rewards: Float[torch.Tensor, " b"]) -> Float[torch.Tensor, "b t"]:
    """Monte-Carlo targets: the episode's reward at every real step (0 on padding).

    With the reward only at the end and no discount this is what the TD targets converge to in
    expectation; it needs no bootstrapping, so a closed-form fit (ridge) can use it directly.
    """
    if torch.any(mask.sum(1) < 1):
        raise ValueError("Every episode needs at least one step")
    return rewards.to(torch.float32)[:, None].expand(mask.shape) * mask


TARGETS = ("td", "mc")


class ValueFunction(nn.Module):
    """The value-function interface: ``V: R^d -> R`` on states ``[..., d]``.

    Each family is a subclass with a ``family`` name and a JSON-able ``config`` that rebuilds it
    (``ValueFunction.from_config``); its parameters and buffers are its ``state_dict``. Families:
    ``"mlp"`` (the paper's MLP, ``MLPValue``), ``"linear"`` (ridge, ``LinearValue``), ``"pca_mlp"`` (an MLP
    on a few principal components of the centred states, ``PCAValue``).
    """

    family = ""
    config: dict[str, Any]

    @staticmethod
    def from_config(config: dict[str, Any]) -> ValueFunction:
        family = config.get("family", "mlp")
        if family not in FAMILIES:
            raise ValueError(f"Unknown value-function family {family!r}; known: {', '.join(FAMILIES)}")
        return FAMILIES[family](**{k: v for k, v in config.items() if k != "family"})


class MLPValue(ValueFunction):
    """MLP value head with ReLU (the paper's choice: 2-3 layers), trained on all ``d`` coordinates."""

    family = "mlp"

    def __init__(self, d_model: int, hidden: int = 256, n_layers: int = 2):
        super().__init__()
        dims = [d_model] + [hidden] * (n_layers - 1)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*layers)
        self.config = {"family": "mlp", "d_model": d_model, "hidden": hidden, "n_layers": n_layers}

    def forward(self, s: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        return self.net(s).squeeze(-1)


class LinearValue(ValueFunction):
    """``V(s) = w . (s - mean) + b``: its gradient is ``w`` everywhere, so control along it is a fixed
    direction (the learned counterpart of a steering vector). Fitted in closed form by ``fit_value``."""

    family = "linear"

    def __init__(self, d_model: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(d_model))
        self.register_buffer("mean", torch.zeros(d_model))
        self.register_buffer("bias", torch.zeros(()))
        self.config = {"family": "linear", "d_model": d_model}

    def forward(self, s: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        return (s - self.mean) @ self.weight + self.bias


class PCAValue(ValueFunction):
    """An MLP on the top ``n_components`` principal components of the centred training states:
    ``V(s) = MLP((s - mean) @ basis)``. Its gradient lies in the span of ``basis``, which keeps it off the
    low-variance directions where an MLP on all coordinates can fit noise."""

    family = "pca_mlp"

    def __init__(self, d_model: int, n_components: int = 32, hidden: int = 64):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_model))
        self.register_buffer("basis", torch.zeros(d_model, n_components))
        self.register_buffer("scale", torch.ones(n_components))
        self.net = nn.Sequential(nn.Linear(n_components, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.config = {"family": "pca_mlp", "d_model": d_model, "n_components": n_components, "hidden": hidden}

    def forward(self, s: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "..."]:
        return self.net((s - self.mean) @ self.basis / self.scale).squeeze(-1)


FAMILIES: dict[str, type[ValueFunction]] = {"mlp": MLPValue, "linear": LinearValue, "pca_mlp": PCAValue}


class Ridge:
    """Ridge regression with an unpenalised intercept on fixed inputs ``x``, factorised once so that many
    targets can be solved cheaply (fitted TD iteration changes only the targets):
    ``w = (Xc^T Xc + lam I)^-1 Xc^T (y - mean y)`` on centred ``Xc``, in float64."""

    def __init__(self, x: Float[torch.Tensor, "n d"], lam: float):
        x64 = x.double()
        self.mean = x64.mean(0)
        self.xc = x64 - self.mean
        self.chol = torch.linalg.cholesky(self.xc.T @ self.xc + lam * torch.eye(x.shape[1], dtype=torch.float64))

    def solve(self, y: Float[torch.Tensor, " n"]) -> tuple[Float[torch.Tensor, " d"], Float[torch.Tensor, " d"], float]:
        """``(w, x_mean, y_mean)``, so that the prediction is ``w . (x - x_mean) + y_mean``."""
        y64 = y.double()
        ym = y64.mean()
        w = torch.cholesky_solve((self.xc.T @ (y64 - ym))[:, None], self.chol)[:, 0]
        return w.float(), self.mean.float(), float(ym)


def ridge(x: Float[torch.Tensor, "n d"], y: Float[torch.Tensor, " n"], lam: float,
          ) -> tuple[Float[torch.Tensor, " d"], Float[torch.Tensor, " d"], float]:
    """One ridge fit (``Ridge(x, lam).solve(y)``): returns ``(w, x_mean, y_mean)``."""
    return Ridge(x, lam).solve(y)


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


def targets_for(target: str, values: Float[torch.Tensor, "b t"], mask: Bool[torch.Tensor, "b t"],
                rewards: Float[torch.Tensor, " b"]) -> Float[torch.Tensor, "b t"]:
    """``"td"``: ``td_targets`` (paper Eq. 6, bootstrapped from ``values``); ``"mc"``: ``mc_targets``."""
    if target == "td":
        return td_targets(values, mask, rewards)
    if target == "mc":
        return mc_targets(mask, rewards)
    raise ValueError(f"Unknown value target {target!r}; choose one of {', '.join(TARGETS)}")


def _corr(v: torch.Tensor, r: torch.Tensor, mask: torch.Tensor) -> float:
    """Correlation of V(s_t) with its episode's reward over the real steps."""
    pairs = torch.stack([v[mask], r[:, None].expand_as(mask)[mask]])
    return float(torch.corrcoef(pairs)[0, 1])


LAMBDAS = (1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6)


def fit_value(rollouts: Rollouts, family: str = "mlp", target: str = "td", *, epochs: int = 30, lr: float = 1e-3,
              batch_size: int = 64, weight_decay: float | None = None, hidden: int | None = None, n_layers: int = 2,
              n_components: int = 32, lambdas: Sequence[float] = LAMBDAS, td_iters: int = 30,
              val_fraction: float = 0.2, seed: int = 0, keep_best: bool = False, progress: bool = True,
              ) -> tuple[ValueFunction, dict[str, Any]]:
    """Fit a value function of ``family`` to ``target`` (``"td"``: paper Eq. 6; ``"mc"``: the reward at every
    step) with a validation split by prompt; returns the value function and its curves.

    - ``"mlp"`` (the paper's) and ``"pca_mlp"`` (``n_components`` principal components of the centred
      training states, standardised): Adam(W) for ``epochs`` on the mean squared error against the targets;
      ``weight_decay`` defaults to 0 for ``"mlp"`` and 1e-2 for ``"pca_mlp"``; ``hidden`` to 256 and 64.
    - ``"linear"``: ridge regression in closed form (``ridge``), its penalty chosen among ``lambdas`` by the
      squared error against the reward on the held-out prompts (``val_mse``), then refitted on every episode. With TD
      targets the fit is repeated ``td_iters`` times, each time against the TD targets of the last fit
      (fitted TD iteration), starting from the Monte-Carlo fit.

    ``curves``: ``val_episodes`` (indices of the validation episodes: every episode of the held-out prompts, none
    with fewer than 5 distinct prompts) and ``val_corr``, the correlation between V(s_t) and the episode's reward
    over the real steps of those episodes (per epoch; for ``"linear"``, per penalty, with ``lambda`` the one chosen
    and ``val_mse`` its criterion); ``held_out_corr`` is the returned V's (the chosen penalty's, the kept epoch's),
    absent without a validation split. It says whether V predicts the reward on prompts it has not seen. Nets also
    get ``train`` and ``val`` losses per epoch; with ``keep_best`` the net after the epoch with the lowest
    validation loss is returned (``best_epoch``, from 0). Prediction is not direction: a net that predicts better
    can steer worse (see ``steerlens.analysis.value_gradient``).
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown value-function family {family!r}; known: {', '.join(FAMILIES)}")
    if target not in TARGETS:
        raise ValueError(f"Unknown value target {target!r}; choose one of {', '.join(TARGETS)}")
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
    curves: dict[str, Any] = {"family": family, "target": target, "train": [], "val": [], "val_corr": [],
                              "val_episodes": val.tolist(), "best_epoch": None}
    d = x.shape[-1]
    if family == "linear":
        vf = LinearValue(d)
        fit_on = lambda idx, lam: _fit_linear(vf, x[idx], mask[idx], r[idx], lam, target, td_iters)  # noqa: E731
        if len(val) and len(lambdas) > 1:
            curves["val_mse"] = []
            for lam in lambdas:
                fit_on(train, lam)
                with torch.no_grad():
                    v, m = vf(x[val]), mask[val]
                    curves["val_corr"].append(_corr(v, r[val], m))
                    curves["val_mse"].append(float((((v - mc_targets(m, r[val])) ** 2) * m).sum() / m.sum()))
            best = min(range(len(lambdas)), key=lambda i: curves["val_mse"][i])
            curves["lambdas"], curves["lambda"] = list(lambdas), lambdas[best]
        else:
            curves["lambda"] = lambdas[len(lambdas) // 2] if len(lambdas) > 1 else lambdas[0]
        fit_on(torch.arange(len(x)), curves["lambda"])
        if "lambdas" in curves:
            curves["held_out_corr"] = curves["val_corr"][curves["lambdas"].index(curves["lambda"])]
        return vf.eval(), curves
    if family == "pca_mlp":
        vf = PCAValue(d, n_components, hidden or 64)
        states = x[train][mask[train]]
        mu = states.mean(0)
        evals, evecs = torch.linalg.eigh(torch.cov((states - mu).T.double()))
        top = evals.argsort(descending=True)[:n_components]
        vf.mean.copy_(mu)
        vf.basis.copy_(evecs[:, top].float())
        vf.scale.copy_(evals[top].clamp_min(1e-12).sqrt().float())
        wd = 1e-2 if weight_decay is None else weight_decay
    else:
        vf = MLPValue(d, hidden or 256, n_layers)
        wd = 0.0 if weight_decay is None else weight_decay
    opt = torch.optim.AdamW(vf.parameters(), lr=lr, weight_decay=wd)
    best_state: dict[str, torch.Tensor] | None = None

    def loss_on(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = vf(x[idx])
        t = targets_for(target, v, mask[idx], r[idx]).detach()
        return (((v - t) ** 2) * mask[idx]).sum() / mask[idx].sum(), v

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
                curves["val"].append(float(loss))
                curves["val_corr"].append(_corr(v, r[val], mask[val]))
            if keep_best and curves["val"][-1] <= min(curves["val"]):
                best_state = {k: t.clone() for k, t in vf.state_dict().items()}
                curves["best_epoch"] = epoch
    if best_state is not None:
        vf.load_state_dict(best_state)
    if curves["val_corr"]:
        curves["held_out_corr"] = curves["val_corr"][-1 if best_state is None else curves["best_epoch"]]
    return vf.eval(), curves


@torch.no_grad()
def _fit_linear(vf: LinearValue, x: torch.Tensor, mask: torch.Tensor, r: torch.Tensor, lam: float, target: str,
                td_iters: int) -> None:
    """``Ridge`` on the real steps against Monte-Carlo targets, then (``target="td"``) fitted TD iteration:
    the Gram matrix is factorised once and only the targets change."""
    solver = Ridge(x[mask], lam)
    y = mc_targets(mask, r)
    for it in range(1 + (td_iters if target == "td" else 0)):
        if it:
            y = td_targets(vf(x), mask, r)
        w, mu, b = solver.solve(y[mask])
        vf.weight.copy_(w)
        vf.mean.copy_(mu)
        vf.bias.fill_(b)


# -- the controller -------------------------------------------------------------------------------------
def producing_positions(n_pos: int, device: torch.device | str = "cpu") -> Bool[torch.Tensor, " pos"]:
    """``[n_pos]`` bool: the positions of the current forward pass that produce a generated token. Inside
    ``steerlens.generate`` (or ``prompt_span``): the prompt's last position and every later one, so a full
    pass without the KV cache edits what the cached passes edited one at a time; elsewhere the last position."""
    span = current_span()
    if span is None:
        return torch.arange(n_pos, device=device) == n_pos - 1
    return torch.arange(span.offset, span.offset + n_pos, device=device) >= span.prompt_length - 1


def gradient_ascent(vf: ValueFunction, s: Float[torch.Tensor, "b d"], alpha: float, n_steps: int,
                    max_norm: float | None = None, path: list[torch.Tensor] | None = None, relative: bool = False,
                    ) -> tuple[Float[torch.Tensor, "b d"], list[torch.Tensor]]:
    """``u <- u + alpha * grad V(s + u)``, n times (paper Eq. 7); optional bound ``||u|| <= max_norm``.

    ``relative=True`` measures both in units of the state's norm, so the edit's size does not depend on how
    steep V happens to be: ``u <- u + alpha * ||s|| * g / ||g||`` and ``||u|| <= max_norm * ||s||`` (with a
    linear V this is exactly ``min(n * alpha, max_norm) * ||s||`` along ``w``).

    Returns the control ``u`` and the values along the way (for trajectory plots); each iterate of
    ``u`` is appended to ``path`` when one is given.
    """
    size = s.norm(dim=-1, keepdim=True) if relative else torch.ones_like(s[..., :1])
    if relative and isinstance(vf, LinearValue) and path is None:
        # closed form: the gradient is w everywhere, so iterate k is min(k alpha, max_norm) ||s|| w/||w||
        # (the same numbers as the loop below, without n autograd passes per token)
        w = vf.weight.to(s.dtype)
        w_norm = w.norm()
        reach = [min(k * alpha, math.inf if max_norm is None else max_norm) for k in range(n_steps + 1)]
        with torch.no_grad():
            v0, step = vf(s), size[..., 0] * w_norm
            trace = [v0 + r * step for r in reach]
        return (reach[-1] * size * w / w_norm.clamp_min(1e-12)).detach(), trace
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
            if relative:
                grad = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12) * size
            u = u + alpha * grad
            if max_norm is not None:
                norm = u.norm(dim=-1, keepdim=True)
                u = u * (max_norm * size / norm.clamp_min(1e-12)).clamp(max=1.0)
            if path is not None:
                path.append(u.detach())
    u = u.detach()
    with torch.no_grad():
        trace.append(vf(s + u))
    return u, trace


@register
class ValueController(Editor):
    """Gradient ascent on the value function at the position that produces the next token.

    Settings: ``alpha``, ``n_steps``, ``max_norm`` (optional bound on ``||u||``), ``relative`` (both in
    units of ``||s||``, see ``gradient_ascent``), ``vf`` (the value function's config), ``placement``.
    Tensors: the value function's parameters and buffers (``vf.*``), and ``gain`` for ``"output"``.

    Placement: ``"normalized"`` and ``"output"`` edit ``ln_final.hook_normalized``, the state that feeds the
    unembedding. ``"normalized"``: V and the ascent act on the RMS-normalised state before the final norm's
    gain (what that hook holds). ``"output"`` (the paper's: the last hidden state, the unembedding's input):
    on ``gain * s``; the control is mapped back by dividing by the gain. Either way the edit comes after every
    block, so it changes the current token's logits only: that position's keys and values are already in the
    cache, and no later token sees the edit (a learned bias on the vocabulary).

    ``"resid"`` (not the paper's) with ``layer=L``: V reads the residual stream after block L
    (``blocks.L.hook_resid_post``, recorded there during the rollouts) and the control is added there, before
    the blocks above and before this position's keys and values enter their caches, so later tokens see it
    through attention, as they see ActAdd's edit.

    ``positions="last"`` edits the positions that produce generated tokens. At the final state that is the last
    position of every pass (generation runs only that one through the final norm). In the residual stream the
    earlier ones are read again by later tokens, so there it is every position from the prompt's last on, in
    ``steerlens.generate`` or inside ``steerlens.editing.prompt_span`` (then cached and uncached decoding
    agree), and the last position in a bare forward pass.
    """

    method = "recontrol"
    tasks = ("detox", "sentiment", "truthfulqa")  # a text reward, or TruthfulQA's labelled answers
    settings_spec = (
        Setting("family", "str", "mlp", "the value function's family", choices=("mlp", "linear", "pca_mlp"),
                saved=False),
        Setting("target", "str", "td", "V's training targets: TD (paper Eq. 6) or Monte-Carlo", choices=("td", "mc"),
                saved=False),
        Setting("alpha", "float", 1.0, "the ascent's step size (paper Eq. 7; with relative: in units of |s|)",
                low=0.0),
        Setting("n_steps", "int", 10, "gradient-ascent steps per token", low=0),
        Setting("max_norm", "float", None, "a bound on the control's norm (with relative: in units of |s|; null: "
                "none)", low=0.0, open_low=True, optional=True, extreme=1.0,
                extreme_note="the control may be larger than the state itself"),
        Setting("relative", "bool", False, "alpha and max_norm in units of the state's norm"),
        Setting("placement", "str", "normalized", "the state V reads and the control edits: the final state before "
                "or after the final norm's gain, or the residual stream after block `layer` (resid)",
                choices=PLACEMENTS),
        Setting("layer", "int", None, "with placement resid: the block whose output (blocks.L.hook_resid_post) V "
                "reads and the control edits", low=0, optional=True),
        Setting("epochs", "int", 40, "training epochs of a neural value function", low=1, saved=False),
        Setting("samples", "int", 2, "rollouts per training prompt", low=1, saved=False),
        Setting("behaviours", "strings", [], "system prompts for extra rollouts (chat rows)", saved=False),
        Setting("temperature", "float", 1.0, "the rollouts' sampling temperature", low=0.0, open_low=True,
                saved=False),
        Setting("rollout_tokens", "int", 48, "tokens per rollout (whatever length is evaluated)", low=1,
                saved=False),
        Setting("seed", "int", 0, "the rollouts' seed", low=0, saved=False),
        Setting("positions", "str", "last", "where the control acts: the position producing the next token, or "
                "every position (scoring given text)", choices=("last", "all"), recipe=False),
        Setting("vf", "object", None, "the value function's config", recipe=False),
        Setting("hidden", "int", None, "(older files) the MLP's width", low=1, recipe=False),
        Setting("n_layers", "int", None, "(older files) the MLP's depth", low=1, recipe=False),
    )
    tensor_spec = (TensorSpec("vf.*"), TensorSpec("gain", ("d_model",), optional=True))
    # Chosen on held-out training prompts (92 of the 461 sentiment training prompts), never on eval.jsonl or
    # test.jsonl. The value function (benchmarks/recontrol_bench.py select): a ridge V on Monte-Carlo targets,
    # whose gradient had the highest cosine with the sentiment direction (0.56 against the paper's MLP's
    # 0.16-0.25), rollouts at temperature 1.0; with a linear V the control is one learned direction. Sentiment's
    # placement, layer and size (benchmarks/recontrol_layers.py, its rule fixed before the runs): the residual
    # stream after block 15, 7.5% of the state's norm (+0.32 VADER at 1.08x perplexity there). Detox keeps the
    # final state and 12.5% (chosen before the residual placement existed). ``behaviours`` stay empty: their gain
    # depended on which rollouts were drawn. Detox trains on 40 prompts only: 24 samples each give about as many
    # rollouts (960) as sentiment's 1,383.
    task_defaults = {
        "sentiment": {"family": "linear", "target": "mc", "relative": True, "alpha": 0.015, "n_steps": 10,
                      "max_norm": 0.075, "samples": 3, "rollout_tokens": 24, "temperature": 1.0,
                      "placement": "resid", "layer": 15},
        "detox": {"family": "linear", "target": "mc", "relative": True, "alpha": 0.025, "n_steps": 10,
                  "max_norm": 0.125, "samples": 24, "rollout_tokens": 24, "temperature": 1.0},
    }
    # the rollouts are rollout_tokens long whatever length is evaluated, so one value function serves every
    # --max-new-tokens (the shipped ones included)
    generation_length_in_key = False
    demo_notes = {"sentiment": (
        "RE-Control pushes the residual stream after block 15 up a learned value function at every generated "
        "token, before the blocks above and the KV cache (the paper edits the final state, where the push only "
        "biases that token's logits); its line shows V before and after and how far the state moved. Its default "
        "value function is linear (it steered best on this small model), so the push is one learned direction, "
        "7.5% of the state's norm, the same at every token: a steering vector learned from rewards. The baselines "
        "show what one added vector (ActAdd), one removed direction (OrthoProj) or a system prompt does.")}

    @classmethod
    def for_task(cls, model: Any, task: Any, settings: dict[str, Any]) -> ValueController:
        """Rollouts on the training prompts scored by the task's reward (``Task.rollouts``; TruthfulQA: the best
        answer, reward 1, and the incorrect answers, reward 0, teacher-forced), then value training."""
        s = settings
        if s["placement"] == "resid" and s["layer"] is None:
            raise ValueError("placement=resid needs a layer: --set layer=L (the block whose output V reads)")
        if s["placement"] != "resid" and s["layer"] is not None:
            raise ValueError(f"layer={s['layer']} applies to placement=resid only (placement is {s['placement']})")
        hook = resid_hook_name(check_layers([s["layer"]], model.cfg.n_layers)[0]) if s["placement"] == "resid" \
            else STATE_HOOK
        if task.name == "truthfulqa":
            if s["behaviours"]:
                raise ValueError("TruthfulQA's value net is trained on given answers (teacher forcing), not "
                                 "rollouts: behaviours do not apply; leave them empty")
            prompts, answers, rewards = [], [], []
            for r in task.rows:
                for a, rew in [(r["best"], 1.0)] + [(x, 0.0) for x in r["incorrect"]]:
                    prompts.append(format_chat(model.tokenizer, r["question"]))
                    answers.append(a)
                    rewards.append(rew)
            ro = teacher_forced(model, prompts, answers, progress=task.progress, hook=hook)
            ro.rewards = rewards
            positions = "all"
        else:
            ro = task.rollouts(samples=s["samples"], tokens=s["rollout_tokens"], temperature=s["temperature"],
                               seed=s["seed"], behaviours=s["behaviours"], hook=hook)
            positions = "last"
        if s["placement"] == "output":  # V reads the final norm's output: the recorded states times its gain
            gain = final_gain(model)
            ro.states = [x * gain for x in ro.states]
        vf, curves = fit_value(ro, s["family"], s["target"], epochs=s["epochs"], progress=task.progress)
        if "held_out_corr" in curves:
            corr = curves["held_out_corr"]
            print(f"recontrol: {s['family']} value function ({s['target']} targets) on held-out training prompts: "
                  f"corr(V(s_t), reward) {corr:+.2f}"
                  + ("; near 0, so V cannot tell good from bad answers to new prompts" if abs(corr) < 0.1 else ""))
        return cls.from_value(model, vf, alpha=s["alpha"], n_steps=s["n_steps"], max_norm=s["max_norm"],
                              positions=positions, relative=s["relative"], placement=s["placement"],
                              layer=s["layer"])

    @classmethod
    @checked_settings
    def from_value(cls, model: Any, vf: ValueFunction, alpha: float = 0.5, n_steps: int = 10,
                   max_norm: float | None = None, positions: str = "last", relative: bool = False,
                   placement: str = "normalized", layer: int | None = None) -> ValueController:
        """``positions="last"`` (generation: the positions that produce new tokens; see the class docstring) or
        ``"all"`` (scoring given text, e.g. TruthfulQA answers, where every position's logits are used).
        ``placement``: ``"normalized"``, ``"output"`` or ``"resid"`` with ``layer`` (``vf`` must have been
        fitted on ``state_of``'s states for that placement; see the class docstring)."""
        if positions not in ("last", "all"):
            raise ValueError(f"positions must be 'last' or 'all', not {positions!r}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")
        spec = ModelSpec.of(model)
        if placement == "resid":
            if layer is None:
                raise ValueError("placement='resid' needs layer=L: the block whose output V reads and the control "
                                 f"edits (0-{spec.n_layers - 1})")
            layers = check_layers([int(layer)], spec.n_layers)
        elif layer is not None:
            raise ValueError(f"layer={layer} applies to placement='resid' only; placement {placement!r} edits the "
                             "final state (leave layer unset, or set placement='resid')")
        else:
            layers = [spec.n_layers - 1]
        if vf.config["d_model"] != spec.d_model:
            raise ValueError(f"Value function takes d_model={vf.config['d_model']}, model has {spec.d_model}")
        tensors = {f"vf.{k}": v.detach().clone() for k, v in vf.state_dict().items()}
        settings = {"alpha": alpha, "n_steps": n_steps, "max_norm": max_norm, "relative": relative,
                    "vf": dict(vf.config), "positions": positions, "placement": placement}
        if placement == "resid":
            settings["layer"] = layers[0]
        if placement == "output":
            tensors["gain"] = final_gain(model).detach().float().cpu().clone()
        return cls(model=spec, layers=layers, settings=settings, tensors=tensors)

    def value_function(self) -> ValueFunction:
        cache = self.__dict__.setdefault("_vf", {})
        device = next(iter(self.tensors.values())).device
        if "vf" not in cache or cache["device"] != device:
            # editors saved before value-function families kept the MLP's shape as hidden / n_layers
            config = self.settings.get("vf") or {"family": "mlp", "d_model": self.model.d_model,
                                                  "hidden": self.settings["hidden"],
                                                  "n_layers": self.settings["n_layers"]}
            vf = ValueFunction.from_config(config)
            vf.load_state_dict({k[3:]: v for k, v in self.tensors.items() if k.startswith("vf.")})
            cache["vf"], cache["device"] = vf.to(device).eval(), device
        return cache["vf"]

    def state_of(self, s: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "... d"]:
        """The state V reads, from what ``ln_final.hook_normalized`` holds (times the gain for ``"output"``)."""
        gain = self.tensors.get("gain")
        return s if gain is None else s * gain.to(s.device, s.dtype)

    def _ascent(self, s: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The control in the hook's space for hook states ``s`` (ascent in V's space, mapped back)."""
        st = self.settings
        u, trace = gradient_ascent(self.value_function(), self.state_of(s), st["alpha"], st["n_steps"],
                                   st["max_norm"], relative=st.get("relative", False))
        gain = self.tensors.get("gain")
        return (u if gain is None else u / gain.to(u.device, u.dtype)), trace

    @property
    def state_hook(self) -> str:
        """The hook V reads and the control edits (``ln_final.hook_normalized``, or the block's residual output
        for ``placement="resid"``)."""
        return resid_hook_name(self.layers[0]) if self.settings.get("placement") == "resid" else STATE_HOOK

    def hook_name(self, layer: int) -> str:
        return self.state_hook

    def hook_fn(self, layer: int) -> HookFn:
        def control(act: torch.Tensor, hook: Any) -> torch.Tensor:
            s = self.settings
            if s["alpha"] == 0 or s["n_steps"] == 0:
                return act
            if s.get("positions", "last") == "all":
                u, _ = self._ascent(act.reshape(-1, act.shape[-1]).float())
                return act + u.reshape(act.shape).to(act.dtype)
            if s.get("placement") == "resid":
                where = producing_positions(act.shape[1], act.device)
            else:  # the final state: only its last position produces a token (generation runs no other there)
                where = torch.arange(act.shape[1], device=act.device) == act.shape[1] - 1
            u, _ = self._ascent(act[:, where].reshape(-1, act.shape[-1]).float())
            out = act.clone()
            out[:, where] = act[:, where] + u.reshape(act.shape[0], -1, act.shape[-1]).to(act.dtype)
            return out
        return control

    @torch.no_grad()
    def describe_step(self, states: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
        """The value before and after the ascent at this token (V is what the control climbs)."""
        pair = states.get(self.state_hook)
        if pair is None:
            return ""
        vf = self.value_function()
        device = next(iter(self.tensors.values())).device
        before, after = (float(vf(self.state_of(t.float().to(device)[None]))[0]) for t in pair)
        return f"V {before:+.3f} -> {after:+.3f}"

    def explain(self, model: Any, context: str, answer: str) -> str:
        """V before and after the ascent, and the control's size, averaged over the answer's states."""
        tokens, mask = encode(model, [context + answer])
        n_ctx = encode(model, [context])[0].shape[1]
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=self.state_hook)
        states = cache[self.state_hook][0, max(n_ctx - 1, 0):-1].float()  # the states that produced the answer
        s = self.settings
        u, trace = self._ascent(states)
        before, after = float(trace[0].mean()), float(trace[-1].mean())
        share = float((u.norm(dim=-1) / states.norm(dim=-1).clamp_min(1e-12)).mean())
        return (f"value V(s) {before:+.3f} -> {after:+.3f} after {s['n_steps']} ascent steps; control |u| = "
                f"{100 * share:.1f}% of |s| (mean over the answer's states at {self.state_hook})")


# -- analysis -------------------------------------------------------------------------------------------
@torch.no_grad()
def value_lens(model: Any, controller: ValueController,
               text: str) -> tuple[Float[torch.Tensor, "layers pos"], list[str]]:
    """V read at every layer and token: each block's residual output, then V. For the final-state placements
    the outputs are RMS-normalised like the final norm does (a logit-lens reading; V was trained on the last
    layer's normalised state); for ``placement="resid"`` they are read as they are (V was trained on one
    block's output, so the other rows show how far its reading carries).

    Returns (values [n_layers + 1, tokens]: rows are the blocks' outputs then the final state; labels).
    """
    tokens, mask = encode(model, [text])
    names = [f"blocks.{la}.hook_resid_post" for la in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: n in names or n == STATE_HOOK)
    vf = controller.value_function()
    resid = controller.settings.get("placement") == "resid"
    rows = []
    for name in names:
        x = cache[name][0].float()
        rows.append(vf(x) if resid else vf(controller.state_of(rms_normalise(x))))
    # resid: the final norm only rescales the last block's output, so its row repeats that block's
    rows.append(rows[-1] if resid else vf(controller.state_of(cache[STATE_HOOK][0].float())))
    labels = [model.tokenizer.decode([t]) for t in tokens[0].tolist()]
    return torch.stack(rows).cpu(), labels


@torch.no_grad()
def value_landscape(controller: ValueController, s: Float[torch.Tensor, " d"], span: float | None = None,
                    steps: int = 41, seed: int = 0) -> dict[str, torch.Tensor]:
    """V on the plane through ``s`` spanned by the unit gradient of V and a random unit direction
    orthogonal to it; ``span`` sets the extent (default: 1.5x the controller's own edit size).

    Returns ``a`` (offsets along the gradient), ``b`` (along the random direction), ``values``
    [steps (a), steps (b)], the ascent ``path`` in (a, b) coordinates and V at each step. ``s`` is a state as
    the hook holds it; the plane lies in V's space (``controller.state_of``)."""
    vf = controller.value_function()
    s = controller.state_of(s.float())
    with torch.enable_grad():
        x = s.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(vf(x), x)
    g_unit = g / g.norm().clamp_min(1e-12)
    r = torch.randn(s.shape, generator=torch.Generator().manual_seed(seed))
    r = r - (r @ g_unit) * g_unit
    r = r / r.norm()
    st = controller.settings
    iterates: list[torch.Tensor] = []
    u, trace = gradient_ascent(vf, s[None], st["alpha"], st["n_steps"], st["max_norm"], path=iterates,
                               relative=st.get("relative", False))
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
    if controller.settings.get("placement") == "resid":
        raise ValueError("control_token_effect reads the final state's edit, whose map to the logits is affine; a "
                         "residual edit passes through the blocks above it: compare its logits with "
                         "steerlens.analysis.compare_edits or divergence_trace instead")
    vf = controller.value_function()
    if states.ndim != 2 or states.shape[-1] != controller.model.d_model:
        raise ValueError(f"states must be [n, {controller.model.d_model}], got {tuple(states.shape)}")
    with torch.enable_grad():
        x = controller.state_of(states.float()).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(vf(x).sum(), x)
    with torch.no_grad():
        g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if "gain" not in controller.tensors:  # a step in the normalised state is scaled by the gain on its way
            g = g * final_gain(model).to(g.device)
        delta = (g @ model.W_U.float()).mean(0)
    name = lambda i: model.tokenizer.decode([int(i)]) if model.tokenizer is not None else str(int(i))  # noqa: E731
    up, down = delta.topk(min(k, len(delta))), (-delta).topk(min(k, len(delta)))
    return {"delta": delta,
            "raised": [(name(i), float(v)) for v, i in zip(up.values, up.indices, strict=True)],
            "lowered": [(name(i), -float(v)) for v, i in zip(down.values, down.indices, strict=True)]}
