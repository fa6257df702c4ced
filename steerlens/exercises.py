"""Checks for the notebooks' exercises.

Each ``check_*`` takes the learner's answer (a number, or a function they wrote), compares it with the
library on cases small enough to run anywhere (random tensors with a fixed seed, or the model the notebook
already loaded), raises ``AssertionError`` with a hint when it is wrong, and returns a short message when it
is right. The tests in ``tests/test_exercises.py`` show each check failing on a wrong answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .analysis import kl_divergence, principal_angles


def _close(mine: Any, want: torch.Tensor, what: str, hint: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    mine = torch.as_tensor(mine).detach().float().cpu()
    want = want.detach().float().cpu()
    if mine.shape != want.shape:
        raise AssertionError(f"{what}: shape {tuple(mine.shape)}, expected {tuple(want.shape)}. {hint}")
    if not torch.allclose(mine, want, atol=atol, rtol=rtol):
        err = float((mine - want).abs().max())
        raise AssertionError(f"{what}: off by up to {err:.3g} from the library's answer. {hint}")


@torch.no_grad()
def check_kl(mine: float | torch.Tensor, model: Any, editor: Any, text: str) -> str:
    """KL(steered || unsteered) of the next-token distribution at the last token of ``text``."""
    from .generation import encode

    tokens, mask = encode(model, [text])
    p = model(tokens, attention_mask=mask)[0, -1]
    with editor.apply(model):
        q = model(tokens, attention_mask=mask)[0, -1]
    want = kl_divergence(q, p)
    _close(mine, want, "KL", "Use log_softmax on both logits and sum q * (log q - log p), q the steered "
           "distribution (KL is not symmetric).", atol=1e-4, rtol=1e-3)
    return f"correct: KL = {float(want):.4f} nats"


def check_principal_angle(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> str:
    """``fn(a, b)``: the principal angle in degrees between the lines spanned by vectors ``a`` and ``b``."""
    g = torch.Generator().manual_seed(0)
    cases = [torch.randn(2, 8, generator=g) for _ in range(5)]
    a = torch.randn(8, generator=g)
    cases += [torch.stack([a, -3 * a]), torch.stack([torch.eye(8)[0], torch.eye(8)[1]])]
    for a, b in cases:
        want = principal_angles(a[:, None], b[:, None])[0]
        _close(torch.as_tensor(fn(a, b), dtype=torch.float32).reshape(()), want, f"angle for a={a[:3].tolist()}...",
               "A line has no sign: use the absolute value of the cosine, then arccos, in degrees.",
               atol=1e-2, rtol=1e-4)
    return "correct: a and -a span the same line (0 degrees), orthogonal vectors give 90"


def check_equal_norm_control(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``fn(delta, r)``: per row of ``delta`` [n, d], an edit of the same norm along the unit vector ``r`` [d]."""
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(6, 16, generator=g) * torch.rand(6, 1, generator=g)
    delta[2] = 0.0  # a token the method left alone: the control leaves it alone too
    r = torch.randn(16, generator=g)
    r = r / r.norm()
    _close(fn(delta, r), delta.norm(dim=-1, keepdim=True) * r, "control", "Each row: ||delta_row|| * r.")
    return "correct: the same size per token, a direction that carries no learned information"


def check_per_token_rescale(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``fn(z, edited)``, both [batch, pos, d]: ``edited`` rescaled to the norm of ``z``, per token vector."""
    g = torch.Generator().manual_seed(2)
    z, edited = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    want = edited * z.norm(dim=-1, keepdim=True) / edited.norm(dim=-1, keepdim=True)
    hint = "Rescale each token's vector: norms over the last axis (d), not over positions."
    _close(fn(z, edited), want, "rescaled", hint)
    # causal: the last token's result must not depend on the earlier ones (as under the KV cache)
    _close(fn(z[:, -1:], edited[:, -1:]), want[:, -1:], "rescaled (last token alone)", hint)
    return "correct: each token is rescaled on its own, so cached and uncached decoding agree"


def check_td_targets(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``fn(values, mask, rewards)``: undiscounted TD(0) targets, reward at the last real step, detached."""
    from .methods.recontrol import td_targets

    g = torch.Generator().manual_seed(3)
    values = torch.randn(3, 5, generator=g, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    rewards = torch.tensor([1.0, -2.0, 0.5])
    mine = fn(values, mask, rewards)
    _close(mine, td_targets(values, mask, rewards), "targets",
           "target[t] = V(s_{t+1}) while step t+1 is real, r at the last real step, 0 on padding.")
    if isinstance(mine, torch.Tensor) and mine.requires_grad:
        raise AssertionError("targets: the values are right but still carry a gradient; detach them (the "
                             "reference code's bug: the loss then also pulls V(s_{t+1}) towards V(s_t)).")
    return "correct: targets match the library's td_targets and are detached"
