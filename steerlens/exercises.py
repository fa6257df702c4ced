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
               atol=0.05, rtol=1e-4)  # arccos near 1 in float32: about 0.03 degrees off for parallel lines
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


def check_sink_safe_hook(make_hook: Callable[[torch.Tensor, float], Callable]) -> str:
    """``make_hook(v, threshold)`` returns a hook ``fn(act, hook)`` that adds ``v`` at every position whose norm
    is at most ``threshold`` and leaves the others (attention sinks) unchanged."""
    g = torch.Generator().manual_seed(4)
    act = torch.randn(2, 6, 8, generator=g)
    act[:, 0] *= 100.0  # a sink at the first position of each row
    v = torch.randn(8, generator=g)
    threshold = 50.0
    ordinary = act.norm(dim=-1, keepdim=True) <= threshold
    want = torch.where(ordinary, act + v, act)
    given = act.clone()
    out = make_hook(v, threshold)(given, None)  # a hook may edit in place and return None (TransformerLens idiom)
    _close(given if out is None else out, want, "hooked activation",
           "Add v where act.norm(dim=-1, keepdim=True) <= threshold; keep the sink's value (torch.where).")
    return "correct: the sink keeps its value and every other position moves by v"


def check_mean_difference(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``fn(pos, neg)``, activations [n, d] and [m, d]: ActAdd's steering vector (Turner et al. Eq. 1)."""
    from .methods.baselines import mean_difference

    g = torch.Generator().manual_seed(5)
    pos, neg = torch.randn(7, 8, generator=g) + 1.0, torch.randn(5, 8, generator=g)
    _close(fn(pos, neg), mean_difference(pos, neg), "steering vector",
           "mean(pos) - mean(neg), the means over examples (dim 0); the two sets may differ in size.")
    return "correct: the mean of the desired activations minus the mean of the undesired ones"


def check_project_out(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``fn(h, u)``: ``h`` [..., d] with its component along the direction ``u`` [d] (any norm) removed."""
    from .methods.baselines import orthonormal_basis, project_out

    g = torch.Generator().manual_seed(6)
    h, u = torch.randn(3, 4, 8, generator=g), torch.randn(8, generator=g) * 3.0
    want = project_out(h, orthonormal_basis(u[None]))
    hint = "Normalise u first: h - (h @ u_hat)[..., None] * u_hat."
    out = fn(h, u)
    _close(out, want, "projected", hint)
    _close(fn(out, u), want, "projected twice", "A projection is idempotent: applying it twice changes nothing.")
    return "correct: no component along u is left, and projecting again changes nothing"


def check_sea_projection(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``fn(z, u_pos, u_neg)``: SEA's edit (Qiu et al. Eq. 4) of token vectors ``z`` [n, d] with orthonormal bases
    ``u_pos`` [d, k+] (kept) and ``u_neg`` [d, k-] (removed), rescaled to ``||z||`` per token."""
    from .methods.sea import spectral_edit

    g = torch.Generator().manual_seed(7)
    z = torch.randn(5, 12, generator=g)
    q = torch.linalg.qr(torch.randn(12, 5, generator=g)).Q
    u_pos, u_neg = q[:, :2], q[:, 2:5]
    hint = "P+ z = (z @ U+) @ U+^T; the negative part keeps z minus its projection on U-; add them, rescale per row."
    _close(fn(z, u_pos, u_neg), spectral_edit(z, u_pos, u_neg), "edited", hint)
    same = fn(z, u_pos, u_pos)
    _close(same, z, "edited with U+ = U-", "When the kept and removed bases coincide the edit must give z back.")
    return "correct: and with U+ = U- the edit gives z back (SEA's cancellation)"


def check_ista_step(fn: Callable[..., torch.Tensor]) -> str:
    """``fn(D, y, c, alpha, l1_ratio, step)``: one proximal-gradient step on PaCE's elastic net (Luo et al.
    Eq. 3): a gradient step on ``1/2 ||y - D c||^2 + alpha (1 - l1_ratio)/2 ||c||^2``, then soft-thresholding
    at ``step * alpha * l1_ratio``. Iterated, it must reach the library's solution."""
    from .solvers import elastic_net, kkt_violation

    g = torch.Generator().manual_seed(8)
    D = torch.nn.functional.normalize(torch.randn(16, 10, generator=g, dtype=torch.float64), dim=0)
    y = torch.randn(3, 16, generator=g, dtype=torch.float64)
    alpha, l1_ratio = 0.05, 0.95
    l1, l2 = alpha * l1_ratio, alpha * (1 - l1_ratio)
    step = float(1.0 / (torch.linalg.eigvalsh(D.T @ D).max() + l2))
    c = torch.randn(3, 10, generator=g, dtype=torch.float64) * 0.1
    grad = (c @ D.T - y) @ D + l2 * c
    z = c - step * grad
    want = z.sign() * (z.abs() - step * l1).clamp_min(0)
    _close(fn(D, y, c, alpha, l1_ratio, step), want, "one step",
           "gradient g = D^T (D c - y) + alpha (1 - l1_ratio) c (rows: (c @ D.T - y) @ D + l2 * c); then "
           "soft-threshold c - step * g at step * alpha * l1_ratio.", atol=1e-8, rtol=1e-6)
    c = torch.zeros(3, 10, dtype=torch.float64)
    for _ in range(3000):
        c = torch.as_tensor(fn(D, y, c, alpha, l1_ratio, step), dtype=torch.float64)
    _close(c, elastic_net(D, y, alpha, l1_ratio, tol=1e-8), "after 3000 steps", "The iteration must converge "
           "to the elastic net's solution.", atol=1e-5, rtol=1e-4)
    worst = float(kkt_violation(D, y, c, alpha, l1_ratio).max())
    return f"correct: 3000 steps reach the library's solution (largest KKT violation {worst:.1e})"


def check_ascent_step(fn: Callable[[Any, torch.Tensor, float], torch.Tensor]) -> str:
    """``fn(vf, s, alpha)``: RE-Control's first control step (Kong et al. Eq. 7) from ``u = 0``:
    ``u = alpha * grad V(s)``, for states ``s`` [n, d] and a value function ``vf`` (an ``nn.Module``)."""
    from .methods.recontrol import MLPValue, gradient_ascent

    torch.manual_seed(9)
    vf = MLPValue(8, hidden=16).eval()
    s = torch.randn(4, 8)
    want, _ = gradient_ascent(vf, s, 0.3, 1)
    _close(fn(vf, s, 0.3), want, "control", "Make s require grad, take torch.autograd.grad(vf(s).sum(), s), "
           "multiply by alpha (one gradient per state: sum the values before differentiating).")
    return "correct: one step uphill on V; n steps repeat it at s + u"


@torch.no_grad()
def check_resid_norms(norms: Any, model: Any, text: str, layer: int) -> str:
    """``norms`` [tokens]: the norm of ``blocks.{layer}.hook_resid_post`` at every token of ``text``."""
    from .generation import encode

    tokens, mask = encode(model, [text])
    name = f"blocks.{layer}.hook_resid_post"
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=name)
    want = cache[name][0].norm(dim=-1)
    _close(norms, want, "norms", f"Run model.run_with_cache on the encoded text, take cache['{name}'][0] and its "
           "norm over the last axis (one number per token).", atol=1e-3, rtol=1e-4)
    return f"correct: the first token's norm is {float(want[0] / want[1:].median()):.0f}x the median of the others"


def check_energy_rank(fn: Callable[[torch.Tensor, float], int]) -> str:
    """``fn(s, K)``: SEA's rank (Qiu et al. Eq. 3), the smallest ``k`` whose top ``k`` singular values (``s``,
    sorted descending) hold at least a share ``K`` of the energy ``sum s^2``."""
    from .methods.sea import energy_rank

    g = torch.Generator().manual_seed(10)
    cases = [(torch.tensor([3.0, 1.0, 1.0, 1.0]), 0.75), (torch.tensor([3.0, 1.0, 1.0, 1.0]), 0.76),
             (torch.tensor([1.0, 1.0, 1.0, 1.0]), 1.0), (torch.tensor([5.0, 0.0, 0.0]), 0.99)]
    cases += [(torch.rand(20, generator=g).sort(descending=True).values, k) for k in (0.5, 0.9, 0.99)]
    for s, k in cases:
        mine, want = int(fn(s, k)), energy_rank(s, k)
        if mine != want:
            raise AssertionError(f"rank for s={[round(float(x), 3) for x in s[:5]]}..., K={k}: {mine}, expected "
                                 f"{want}. Energy is the squared singular values; count the top values until their "
                                 "share of the total reaches K (reaching it exactly counts).")
    return "correct: with s = (3, 1, 1, 1), 75% of the energy is in the top direction, so K = 0.75 keeps one"


def check_pace_removal(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """``fn(z, D, c, undesirable)``: PaCE's edit (Luo et al. Eq. 4) of activations ``z`` [n, d], given atoms ``D``
    [d, k], coefficients in activation units ``c`` [n, k] and a 0/1 mask ``undesirable`` [k]: subtract only the
    undesirable concepts' part, keep the benign part and the residual."""
    g = torch.Generator().manual_seed(11)
    z, D = torch.randn(4, 10, generator=g), torch.randn(10, 6, generator=g)
    c = torch.randn(4, 6, generator=g)
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    want = z - (c * mask) @ D.T
    _close(fn(z, D, c, mask), want, "edited", "z - D_U c_U: zero the benign coefficients (c * undesirable), map "
           "them back through the atoms (@ D.T) and subtract; do not replace z by its reconstruction D c.")
    return "correct: only the undesirable part goes; the residual z - D c stays"


# -- the capstone (notebook 09): inference-time intervention, and whether a method beats its control -----------

def head_states(model: Any, texts: list[str]) -> torch.Tensor:
    """Every attention head's output before ``W_O`` (``blocks.L.attn.hook_z``) at the last real token of each
    text: ``[n_texts, n_layers, n_heads, d_head]``."""
    from .activations import collect_activations

    names = [f"blocks.{layer}.attn.hook_z" for layer in range(int(model.cfg.n_layers))]
    acts = collect_activations(model, texts, hook_names=names, progress=False)
    return torch.stack([acts[n].float() for n in names], 1)


def iti_reference(model: Any, positive: list[str], negative: list[str], k: int, seed: int = 0
                  ) -> tuple[list[tuple[int, int]], dict[int, torch.Tensor]]:
    """The capstone's recipe, for the check: the ``k`` heads (layer, head) whose mass-mean probe separates the
    held-out half of the pairs best, and per layer the shift ``sum_h sigma_h theta_h W_O[layer, h]`` (before
    ``alpha``) that moving those heads' outputs by one standard deviation along their probes adds to
    ``blocks.L.hook_attn_out``."""
    zp, zn = head_states(model, positive), head_states(model, negative)
    perm = torch.randperm(len(positive), generator=torch.Generator().manual_seed(seed))
    fit, held = perm[: len(positive) // 2], perm[len(positive) // 2:]

    def unit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        theta = a.mean(0) - b.mean(0)
        return theta / theta.norm(dim=-1, keepdim=True)

    u = unit(zp[fit], zn[fit])
    a, b = (zp[held] * u).sum(-1), (zn[held] * u).sum(-1)  # [m, layers, heads]
    pooled = torch.cat([a - a.mean(0), b - b.mean(0)]).std(0)
    separation = (a.mean(0) - b.mean(0)) / pooled
    n_heads = int(model.cfg.n_heads)
    top = [divmod(int(i), n_heads) for i in separation.flatten().topk(k).indices]
    u = unit(zp, zn)
    sigma = (torch.cat([zp, zn]) * u).sum(-1).std(0)
    out: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for layer, head in top:
            v = sigma[layer, head] * u[layer, head] @ model.W_O[layer, head].float()
            out[layer] = out.get(layer, torch.zeros_like(v)) + v
    return top, out


def check_iti(cls: Any, model: Any) -> str:
    """``cls``: the learner's ``Editor`` subclass with ``cls.fit(model, positive, negative, k, alpha)``. Its
    layers and shift vectors must match ``iti_reference`` on the sentiment pairs, its hooks must sit at
    ``blocks.L.hook_attn_out`` and add ``alpha`` times the vector, and ``check_hook`` must find them cache- and
    batch-safe."""
    from .analysis import check_hook
    from .data import contrast_pairs
    from .editing import Editor

    if not (isinstance(cls, type) and issubclass(cls, Editor)):
        raise AssertionError("Pass the class itself (a steerlens.editing.Editor subclass), not an instance")
    pos, neg = contrast_pairs("sentiment")
    k, alpha = 6, 2.0
    mine = cls.fit(model, pos, neg, k=k, alpha=alpha)
    top, want = iti_reference(model, pos, neg, k)
    if sorted(mine.layers) != sorted(want):
        raise AssertionError(f"layers {sorted(mine.layers)}, expected {sorted(want)} (the layers of the heads "
                             f"{top}). Rank heads by the held-out separation, the first half of the seeded "
                             "permutation fitting the probes.")
    for layer in want:
        _close(mine.tensors[f"vector.{layer}"], want[layer], f"vector.{layer}",
               "Fit the final directions and sigma on all pairs, and map each head's shift through W_O[layer, head].",
               atol=1e-3, rtol=1e-3)
    hooks = mine.fwd_hooks()
    names = sorted(name for name, _ in hooks)
    expected = sorted(f"blocks.{layer}.hook_attn_out" for layer in want)
    if names != expected:
        raise AssertionError(f"hooks at {names}, expected {expected}: define hook_name(self, layer)")
    layer = sorted(want)[0]
    act = torch.randn(2, 5, int(model.cfg.d_model), generator=torch.Generator().manual_seed(0))
    out = dict(hooks)[f"blocks.{layer}.hook_attn_out"](act.clone(), None)
    _close(out, act + alpha * want[layer], "hooked attn_out", "The hook adds alpha * vector at every position.",
           atol=1e-3, rtol=1e-3)
    result = check_hook(model, hooks, max_new_tokens=6)
    if not result.ok:
        raise AssertionError(f"check_hook: {result}")
    return (f"correct: {k} heads {top} at layers {sorted(want)}; the hooks are cache- and batch-safe")


def check_beats_control(fn: Callable[[dict[str, Any]], bool]) -> str:
    """``fn(row)``: from one row of ``run_sweep(..., control=True)`` (``change``, ``change_low``,
    ``change_high``, and the same under ``row["control"]``), whether the method credibly beats its equal-size
    random control. Any rule passes that says no where the intervals do not allow a yes, and yes where they do."""
    def row(m: tuple[float, float, float], c: tuple[float, float, float]) -> dict[str, Any]:
        keys = ("change_low", "change", "change_high")
        return {**dict(zip(keys, m, strict=True)), "control": dict(zip(keys, c, strict=True))}

    cases = [
        (row((0.20, 0.40, 0.60), (-0.10, 0.00, 0.10)), True, "a clear effect over a null control"),
        (row((-0.05, 0.30, 0.60), (-0.10, 0.00, 0.10)), False, "the method's own interval crosses zero"),
        (row((0.10, 0.30, 0.50), (0.05, 0.25, 0.45)), False, "the control moves the metric as much: the size of "
         "the push, not its direction"),
        (row((0.10, 0.20, 0.30), (-0.60, -0.40, -0.20)), True, "the control lowers the metric, the method raises "
         "it"),
        (row((-0.50, -0.30, -0.10), (-0.10, 0.00, 0.10)), False, "the method moves the metric the wrong way"),
    ]
    for case, want, why in cases:
        got = fn(case)
        if bool(got) is not want:
            raise AssertionError(f"for {why} your rule says {got!r}, expected {want}: {case}")
    return "correct: your rule says yes only where the method's interval clears zero and its control's interval"


# ---- design exercises: the learner designs a measurement or a control; each check accepts any design with the
# stated properties and rejects the plausible wrong ones (tests/test_exercises.py shows which) ----

def _safe_call(fn: Callable, what: str, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:  # the learner's code crashed: say where, keep the cause
        raise AssertionError(f"your function raised {type(e).__name__} on {what}: {e}") from e


def _verdicts(fn: Callable[..., Any], cases: dict[str, tuple[tuple, bool]], yes: str, no: str, hint: str) -> None:
    """Run the learner's yes/no test ``fn(*args)`` on labelled cases with known answers; raise listing every
    case it gets wrong (``yes``/``no`` say what the right answer means), then the hint."""
    wrong = []
    for label, (args, expected) in cases.items():
        answer = bool(_safe_call(fn, label, *args))
        if answer != expected:
            wrong.append(f"{label}: {yes if expected else no}, your test said {answer}")
    if wrong:
        raise AssertionError("; ".join(wrong) + ". Hint: " + hint)


def _cache_probe_hooks() -> dict[str, tuple[Callable, bool]]:
    """Hooks with a known answer: True when each position's output is the same whether the hook sees the whole
    sequence at once or one new position at a time (KV-cached decoding)."""
    v = torch.linspace(-1.0, 1.0, 8)

    def add(act, hook):
        return act + v

    def add_in_place(act, hook):  # the TransformerLens idiom: edit in place, return None
        act += v

    def per_token_rescale(act, hook):
        return act * 2.0 / act.norm(dim=-1, keepdim=True).clamp_min(1e-6)

    def skip_first_position(act, hook):  # "leave the sink alone", written for the whole sequence only
        out = act.clone()
        out[:, 1:] += v
        return out

    def last_position_only(act, hook):
        out = act.clone()
        out[:, -1] += v
        return out

    def centre_over_positions(act, hook):
        return act - act.mean(dim=1, keepdim=True)

    def per_coordinate_rescale(act, hook):
        edited = act + v
        return edited * act.norm(dim=1, keepdim=True) / edited.norm(dim=1, keepdim=True).clamp_min(1e-6)

    return {"add a vector": (add, True), "add in place, return None": (add_in_place, True),
            "rescale each token": (per_token_rescale, True), "skip position 0": (skip_first_position, False),
            "edit the last position only": (last_position_only, False),
            "centre over positions": (centre_over_positions, False),
            "rescale each coordinate over positions": (per_coordinate_rescale, False)}


def check_cache_safety_test(fn: Callable[[Callable], bool]) -> str:
    """Lesson 00's design exercise. ``fn(hook_fn) -> bool``: the learner's own test of whether a hook
    ``hook_fn(act, hook)`` on an activation [batch, pos, d] (d = 8 here) gives every position the same output
    under the KV cache (the hook sees one new position per call) as without it (the whole sequence at once).
    Checked on seven hooks with known answers, the in-place idiom (returns ``None``) among them."""
    probes = _cache_probe_hooks()
    _verdicts(fn, {f"the hook '{label}'": ((hook_fn,), safe) for label, (hook_fn, safe) in probes.items()},
              "safe", "not safe", "run the hook once on a whole random sequence and once on each position alone, on "
              "copies (a hook may edit in place and return None), and compare position by position.")
    return "correct: your test separates the seven hooks; the three that are safe only edit each token by itself"


def _hook_count(model: Any) -> int:
    return sum(len(getattr(hp, "fwd_hooks", [])) for hp in model.hook_dict.values())


@torch.no_grad()
def check_effect_measure(fn: Callable[[Any, list], float], model: Any, vector: torch.Tensor, layer: int) -> str:
    """Lesson 01's design exercise. ``fn(model, fwd_hooks) -> float``: the learner's cheap measurement of how
    positive the model is under the hooks, without generating. Checked on ``vector`` added at ``layer`` with
    strengths -1, 0 and +1: the three values must come out in that order, and no hook may be left attached."""
    name = f"blocks.{layer}.hook_resid_post"
    before = _hook_count(model)
    values = []
    for s in (-1.0, 0.0, 1.0):
        hooks = [(name, lambda act, hook, s=s: act + s * vector.to(act))]
        values.append(float(_safe_call(fn, f"strength {s:+.0f}", model, hooks)))
        if _hook_count(model) != before:
            model.reset_hooks()
            raise AssertionError("a hook was left on the model after your measurement: use "
                                 "`with model.hooks(fwd_hooks=...)`, which removes them even on an exception.")
    if not values[0] < values[1] < values[2]:
        raise AssertionError(f"your measure gives {values[0]:.4g}, {values[1]:.4g}, {values[2]:.4g} for strengths -1, "
                             "0, +1 of the positive direction; it should rise with the strength. Hint: run the "
                             "model under the hooks on a few prompts and compare the next token's log-probability "
                             "of positive words with that of negative ones.")
    return f"correct: {values[0]:+.3f} < {values[1]:+.3f} < {values[2]:+.3f}, and no hook left behind"


def _eq4(z: torch.Tensor, u_pos: torch.Tensor, u_neg: torch.Tensor) -> torch.Tensor:
    out = z @ u_pos @ u_pos.T + z - z @ u_neg @ u_neg.T
    return out * z.norm(dim=-1, keepdim=True) / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def check_cancel_test(fn: Callable[[torch.Tensor, torch.Tensor], bool]) -> str:
    """Lesson 02's design exercise. ``fn(u_pos [d, k+], u_neg [d, k-]) -> bool``: True when SEA's Eq. 4 with these
    orthonormal bases gives back every input ``z`` (the edit cancels). Checked on pairs whose answer comes from
    applying Eq. 4 to random inputs: the same basis, the same subspace in another basis, different subspaces,
    and nested ones of different rank."""
    g = torch.Generator().manual_seed(3)
    d = 12

    def basis(k):
        return torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0]

    a1, a3 = basis(1), basis(3)
    rot = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    cases = {"the same basis": (a3, a3.clone()), "the same line, opposite sign": (a1, -a1),
             "the same subspace in a rotated basis": (a3, a3 @ rot), "two random lines": (a1, basis(1)),
             "a plane holding the removed line": (a3[:, :2], a3[:, :1]),
             "a line inside the removed plane": (a3[:, :1], a3[:, :2])}
    z = torch.randn(50, d, generator=g, dtype=torch.float64)
    _verdicts(fn, {label: ((up.float(), un.float()), bool((_eq4(z, up, un) - z).norm() / z.norm() < 1e-6))
                   for label, (up, un) in cases.items()},
              "Eq. 4 cancels", "Eq. 4 edits", "compare the subspaces, not the bases: two bases span the same subspace "
              "exactly when their projection matrices are equal.")
    return "correct: Eq. 4 cancels exactly when the kept and the removed subspace are the same subspace"


def check_matched_control(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
                          ) -> str:
    """Lesson 03's design exercise. ``fn(coef [n], D [n, d], mask [n] bool, generator) -> control [n] bool``: a
    random control partition for PaCE's removal. It must leave out every undesirable atom, remove a part whose
    norm ``|| D^T (c * control) ||`` is within 25% of the undesirable part's, and be random (other generators,
    other controls). Checked on three synthetic codes where most undesirable atoms are inactive."""
    outcomes = []
    for seed in range(3):
        g = torch.Generator().manual_seed(10 + seed)
        n, d = 400, 64
        D = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
        coef = torch.zeros(n)
        active = torch.randperm(n, generator=g)[:40]
        coef[active] = torch.randn(40, generator=g).sign() * torch.exp(0.5 * torch.randn(40, generator=g))
        mask = torch.zeros(n, dtype=torch.bool)
        mask[active[:6]] = True
        mask[torch.randperm(n, generator=g)[:30]] = True  # undesirable atoms this text does not use
        target = float((D.T @ (coef * mask)).norm())
        controls = [torch.as_tensor(_safe_call(fn, f"code {seed}", coef, D, mask,
                                               torch.Generator().manual_seed(100 * seed + k))).bool()
                    for k in range(2)]
        for c in controls:
            if c.shape != mask.shape:
                raise AssertionError(f"the control has shape {tuple(c.shape)}, expected {tuple(mask.shape)}")
            if (c & mask).any():
                raise AssertionError("the control removes undesirable atoms: a control must leave them out")
            got = float((D.T @ (coef * c)).norm())
            if not 0.75 * target <= got <= 1.25 * target:
                raise AssertionError(f"your control removes a part of norm {got:.3f}, the undesirable atoms "
                                     f"{target:.3f}. Hint: most atoms are inactive in a code (coefficient 0), so "
                                     "removing them removes nothing; choose among the atoms this text uses.")
        outcomes.append(not torch.equal(controls[0], controls[1]))
    if not any(outcomes):
        raise AssertionError("two different generators gave the same control every time: draw it at random")
    return "correct: disjoint from the undesirable atoms, the same size of edit, drawn at random"


def _grad_probe_values(d: int, g: torch.Generator) -> dict[str, tuple[Callable, bool]]:
    w = torch.randn(d, generator=g)
    w2 = torch.randn(d, generator=g)
    a = torch.randn(d, d, generator=g)
    hidden = torch.randn(d, 16, generator=g)
    out = torch.randn(16, generator=g)
    return {"a linear value": (lambda s: s @ w + 0.5, False),
            "a squashed linear value, tanh(w.s)": (lambda s: 3 * torch.tanh(s @ w / 4), False),
            "a sum of two squashed linear values": (lambda s: torch.tanh(s @ w) + torch.tanh(s @ w2), True),
            "a quadratic value": (lambda s: ((s @ a) * s).sum(-1), True),
            "a one-hidden-layer MLP": (lambda s: torch.tanh(s @ hidden) @ out, True)}


def check_state_dependence_test(fn: Callable[[Callable, torch.Tensor], bool]) -> str:
    """Lesson 04's design exercise. ``fn(value_fn, states [n, d]) -> bool``: True when gradient ascent on
    ``value_fn`` ([n, d] -> [n]) moves different states in different directions; False when every state is
    pushed along one fixed direction (then the control is ActAdd with a state-dependent step size)."""
    g = torch.Generator().manual_seed(4)
    states = torch.randn(32, 10, generator=g)
    _verdicts(fn, {label: ((value_fn, states.clone()), dependent)
                   for label, (value_fn, dependent) in _grad_probe_values(10, g).items()},
              "depends on the state", "does not depend on the state", "take the gradient at every state (autograd) "
              "and compare their directions, not their lengths: a squashed linear value has gradients of different "
              "lengths along one direction.")
    return "correct: only the directions of the gradients matter; their lengths are the step size"


def check_edit_similarity(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> str:
    """Lesson 05's design exercise. ``fn(a [T, d], b [T, d]) -> float``: a score of how far two methods' edits
    (one row per token) point the same way. It must be 1 for an edit against itself, ignore an overall positive
    rescaling of either edit, be negative for opposite edits, near 0 (|s| < 0.2) for unrelated random edits, and
    unchanged (no NaN) when tokens that neither method edits are added."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(12, 64, generator=g)
    b = a + 0.8 * torch.randn(12, 64, generator=g)
    pad = torch.zeros(5, 64)

    def score(x, y, what):
        s = float(_safe_call(fn, what, x, y))
        if s != s:
            raise AssertionError(f"your score is NaN on {what}. Hint: a token that no method edits has a zero "
                                 "edit; a cosine there divides by zero.")
        return s

    base = score(a, b, "two related edits")
    problems = []
    if abs(score(a, a, "an edit against itself") - 1) > 1e-3:
        problems.append("an edit against itself should score 1")
    if max(abs(score(a, 3.0 * b, "a rescaled edit") - base), abs(score(0.1 * a, b, "a rescaled edit") - base)) > 1e-3:
        problems.append("rescaling an edit changes your score: the strength is a setting, not a direction")
    if score(a, -a, "opposite edits") >= 0:
        problems.append("opposite edits should score below 0")
    if abs(score(a, torch.randn(12, 64, generator=g), "unrelated edits")) >= 0.2:
        problems.append("unrelated random edits should score near 0")
    if abs(score(torch.cat([a, pad]), torch.cat([b, pad]), "padded edits") - base) > 1e-3:
        problems.append("adding tokens that neither method edits changes your score")
    if problems:
        raise AssertionError("; ".join(problems) + ".")
    return f"correct: a score that measures direction only (the two related edits score {base:.3f})"


def check_chance_angle(fn: Callable[[int, int, int, torch.Generator], float]) -> str:
    """Lesson 06's design exercise. ``fn(d, k, n_samples, generator) -> float``: the mean smallest principal
    angle (degrees) between two uniformly random k-dimensional subspaces of R^d, estimated from ``n_samples``
    draws: the chance level against which a measured angle between two methods' subspaces is read."""
    problems = []
    for d, k in ((16, 1), (576, 1), (64, 4)):
        g = torch.Generator().manual_seed(6)
        q1, q2 = (torch.linalg.qr(torch.randn(4000, d, k, generator=g, dtype=torch.float64))[0] for _ in range(2))
        cos = torch.linalg.svdvals(q1.transpose(1, 2) @ q2)[:, 0].clamp(max=1.0)  # largest cosine: smallest angle
        want = float(torch.rad2deg(torch.arccos(cos)).mean())
        got = float(_safe_call(fn, f"d={d}, k={k}", d, k, 2000, torch.Generator().manual_seed(7)))
        if abs(got - want) > 1.5:
            problems.append(f"d={d}, k={k}: yours {got:.1f}, expected about {want:.1f} degrees")
    if problems:
        raise AssertionError("; ".join(problems) + ". Hint: a uniformly random subspace is the span of a matrix "
                             "of independent standard normals (uniform entries all share a sign bias); a line has "
                             "no sign; with k > 1 take the smallest of the principal angles.")
    return "correct: random lines in 576 dimensions are almost orthogonal; in 16 they are not"


def check_leak_test(fn: Callable[[Callable], bool]) -> str:
    """Lesson 07's design exercise. ``fn(td_fn) -> bool``: True when ``td_fn(values, mask, rewards)`` returns
    targets through which the loss's gradient flows back into ``values`` (the reference code's undetached TD
    target), False when the targets are constants for the backward pass."""
    from .methods.recontrol import td_targets

    def undetached(values, mask, rewards):
        nxt = torch.zeros_like(values)
        nxt[:, :-1] = values[:, 1:]
        return nxt * mask

    def detached_scaled(values, mask, rewards):
        return 0.9 * td_targets(values, mask, rewards)

    def smoothed(values, mask, rewards):  # the next two values averaged, still attached
        nxt = torch.zeros_like(values)
        nxt[:, :-2] = 0.5 * (values[:, 1:-1] + values[:, 2:])
        return nxt * mask

    cases = {"steerlens' td_targets": (td_targets, False), "a shift without detach": (undetached, True),
             "td_targets scaled by 0.9": (detached_scaled, False),
             "the next two values averaged": (smoothed, True)}
    _verdicts(fn, {label: ((td_fn,), leaks) for label, (td_fn, leaks) in cases.items()}, "leaks", "does not leak",
              "make values that require grad, compute the targets, and ask autograd whether they still depend on the "
              "values (their requires_grad, or the gradient of their sum with respect to the values).")
    return "correct: a target that keeps its graph pulls the values toward themselves"


def check_effect_interval(fn: Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[float, float]]) -> str:
    """Lesson 08's design exercise. ``fn(steered [n], unsteered [n], generator) -> (low, high)``: a 95% interval
    for the mean per-prompt change ``mean(steered - unsteered)``. Checked by simulation on 200 synthetic prompt
    sets where prompts differ far more from each other than steering moves them: the interval must cover the
    true change 88-99.5% of the time and be no more than 1.5 times as wide as the t interval of the paired
    differences."""
    g = torch.Generator().manual_seed(8)
    n, true = 40, 0.2
    covered, widths, ref = 0, [], []
    for i in range(200):
        unsteered = torch.randn(n, generator=g)
        steered = unsteered + true + 0.2 * torch.randn(n, generator=g)
        low, high = (float(x) for x in _safe_call(fn, f"prompt set {i}", steered.clone(), unsteered.clone(),
                                                  torch.Generator().manual_seed(i)))
        if not low <= high:
            raise AssertionError(f"the interval ({low:.3f}, {high:.3f}) has its ends swapped")
        covered += low <= true <= high
        widths.append(high - low)
        diff = steered - unsteered
        ref.append(2 * 2.023 * float(diff.std()) / n ** 0.5)  # t(0.975, 39) = 2.023
    coverage, ratio = covered / 200, sum(widths) / sum(ref)
    if not 0.88 <= coverage <= 0.995:
        raise AssertionError(f"your interval covers the true change in {coverage:.0%} of 200 prompt sets; a 95% "
                             "interval should cover it about 95% of the time. Hint: it is an interval for the mean "
                             "change, not for one prompt's change.")
    if ratio > 1.5:
        raise AssertionError(f"your interval is {ratio:.1f} times as wide as the paired one: pair the prompts "
                             "(resample or take the spread of the per-prompt differences, not of each run apart).")
    return f"correct: coverage {coverage:.0%}, {ratio:.2f} times the paired t interval's width"
