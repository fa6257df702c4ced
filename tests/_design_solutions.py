"""The design exercises' reference solutions (the notebooks hold the same code): tests/test_exercises.py runs
them through their checks, beside plausible wrong designs that must fail."""

import torch

from steerlens.analysis import principal_angles


# 00
def is_cache_safe(hook_fn):
    x = torch.randn(1, 6, 8)
    xa = x.clone()
    out = hook_fn(xa, None)
    whole = xa if out is None else out  # a hook may edit in place and return None
    steps = []
    for t in range(x.shape[1]):
        xt = x[:, t:t + 1].clone()
        out = hook_fn(xt, None)
        steps.append(xt if out is None else out)
    return torch.allclose(whole, torch.cat(steps, dim=1), atol=1e-5)

# 01
POSITIVE = [" good", " great", " happy", " wonderful", " love"]
NEGATIVE = [" bad", " terrible", " sad", " awful", " hate"]
PROMPTS = ["The weather today is", "I think the food here is", "My week has been"]


@torch.no_grad()
def positivity(model, fwd_hooks):
    import steerlens

    pos = [model.to_single_token(w) for w in POSITIVE]
    neg = [model.to_single_token(w) for w in NEGATIVE]
    tokens, mask = steerlens.encode(model, PROMPTS)
    with model.hooks(fwd_hooks=fwd_hooks):  # removed on exit, even on an exception
        logits = model(tokens, attention_mask=mask)
    logp = logits[:, -1].log_softmax(-1)  # steerlens pads on the left: the last position is the next token
    return float((logp[:, pos].logsumexp(-1) - logp[:, neg].logsumexp(-1)).mean())


# 02
def cancels(u_pos, u_neg):
    p_pos, p_neg = u_pos @ u_pos.T, u_neg @ u_neg.T
    return bool(torch.allclose(p_pos, p_neg, atol=1e-5))

# 03
def matched_control(coef, D, mask, generator):
    target = (D.T @ (coef * mask)).norm()
    candidates = ((coef != 0) & ~mask).nonzero().squeeze(1)
    candidates = candidates[torch.randperm(len(candidates), generator=generator)]
    control = torch.zeros_like(mask)
    for i in candidates:
        trial = control.clone()
        trial[i] = True
        if (D.T @ (coef * trial)).norm() <= 1.1 * target:
            control = trial
    return control

# 04
def state_dependent(value_fn, states):
    s = states.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(value_fn(s).sum(), s)
    unit = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return bool((unit @ unit[0]).abs().min() < 0.99)

# 05
def edit_similarity(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))

# 06
def chance_angle(d, k, n_samples, generator):
    angles = [principal_angles(torch.randn(d, k, generator=generator), torch.randn(d, k, generator=generator))[0]
              for _ in range(n_samples)]
    return float(torch.stack(angles).mean())

# 07
def leaks(td_fn):
    values = torch.randn(4, 6, requires_grad=True)
    mask = torch.ones(4, 6, dtype=torch.bool)
    return td_fn(values, mask, torch.randn(4)).requires_grad

# 08
def effect_interval(steered, unsteered, generator):
    diff = steered - unsteered
    idx = torch.randint(len(diff), (2000, len(diff)), generator=generator)
    means = diff[idx].mean(1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))
