"""steerlens.exercises: every check accepts the right answer and fails on a wrong one."""

import ast
import functools
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import steerlens
from steerlens import exercises as ex
from steerlens.analysis import principal_angles


@functools.cache
def _lessons() -> dict:
    """Every lesson's cells, read from its source by tools/make_notebooks.py."""
    spec = importlib.util.spec_from_file_location("mn", Path(__file__).resolve().parents[1] / "tools" /
                                                  "make_notebooks.py")
    mn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mn)
    return mn.NOTEBOOKS


def _solution(name: str):
    """The function ``name`` from the lesson's own exercise solution: the cell's imports, literal constants and
    definitions, run with the names a lesson's first cell imports (the calls on the lesson's state are left out)."""
    for cells in _lessons().values():
        for kind, *body in cells:
            if kind == "exercise" and f"def {name}(" in body[0]:
                tree = ast.parse(body[0])
                keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef))
                        or isinstance(n, ast.Assign) and isinstance(n.value, (ast.List, ast.Tuple, ast.Constant))]
                namespace = {"torch": torch, "steerlens": steerlens, "principal_angles": principal_angles}
                exec(compile(ast.Module(keep, type_ignores=[]), name, "exec"), namespace)
                return namespace[name]
    raise LookupError(f"no lesson's exercise solution defines {name}")


def test_principal_angle():
    def right(a, b):
        return torch.rad2deg(torch.arccos(((a @ b).abs() / (a.norm() * b.norm())).clamp(max=1.0)))

    def signed(a, b):  # forgets that a line has no sign: a and -a come out 180 degrees apart
        return torch.rad2deg(torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1.0, 1.0)))

    assert "correct" in ex.check_principal_angle(right)
    with pytest.raises(AssertionError, match="absolute value"):
        ex.check_principal_angle(signed)


def test_equal_norm_control():
    assert "correct" in ex.check_equal_norm_control(lambda d, r: d.norm(dim=-1, keepdim=True) * r)
    with pytest.raises(AssertionError, match="control"):
        ex.check_equal_norm_control(lambda d, r: d.norm() * r.expand_as(d))  # one norm for all tokens


def test_per_token_rescale():
    assert "correct" in ex.check_per_token_rescale(
        lambda z, e: e * z.norm(dim=-1, keepdim=True) / e.norm(dim=-1, keepdim=True))
    with pytest.raises(AssertionError, match="last axis"):  # the reference code's per-coordinate rescale
        ex.check_per_token_rescale(lambda z, e: e * z.norm(dim=1, keepdim=True) / e.norm(dim=1, keepdim=True))


def test_td_targets():
    from steerlens.methods.recontrol import td_targets

    assert "correct" in ex.check_td_targets(td_targets)

    def undetached(values, mask, rewards):
        nxt = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
        has_next = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
        target = torch.where(has_next, nxt, torch.zeros_like(nxt))
        last = mask.sum(1) - 1
        target = target.index_put((torch.arange(len(last)), last), rewards)
        return target * mask

    with pytest.raises(AssertionError, match="detach"):
        ex.check_td_targets(undetached)

    def reward_first(values, mask, rewards):  # the reference code's terminal reward at the first position
        t = td_targets(values, mask, rewards).clone()
        last = mask.sum(1) - 1
        t[torch.arange(3), last] = 0.0
        t[:, 0] = rewards
        return t

    with pytest.raises(AssertionError, match="targets"):
        ex.check_td_targets(reward_first)


@pytest.mark.integration
def test_kl_on_a_model(tiny_chat):
    from steerlens.methods import ActAdd

    act = ActAdd.fit(tiny_chat, ["good day"], ["bad day"], layers=[1], alpha=3.0, progress=False)
    from steerlens.generation import encode

    tokens, _ = encode(tiny_chat, ["one two three"])
    p = tiny_chat(tokens)[0, -1].log_softmax(-1)
    with act.apply(tiny_chat):
        q = tiny_chat(tokens)[0, -1].log_softmax(-1)
    assert "correct" in ex.check_kl((q.exp() * (q - p)).sum(), tiny_chat, act, "one two three")
    with pytest.raises(AssertionError, match="not symmetric"):
        ex.check_kl((p.exp() * (p - q)).sum(), tiny_chat, act, "one two three")


def test_sink_safe_hook():
    def right(v, threshold):
        def hook(act, hook):
            return torch.where(act.norm(dim=-1, keepdim=True) <= threshold, act + v, act)
        return hook

    def in_place(v, threshold):  # the TransformerLens idiom: edit the tensor, return None
        def hook(act, hook):
            act[act.norm(dim=-1) <= threshold] += v
        return hook

    def in_place_everywhere(v, threshold):
        def hook(act, hook):
            act += v
        return hook

    assert "correct" in ex.check_sink_safe_hook(right)
    assert "correct" in ex.check_sink_safe_hook(in_place)
    with pytest.raises(AssertionError, match="sink"):
        ex.check_sink_safe_hook(lambda v, t: (lambda act, hook: act + v))  # edits the sink too
    with pytest.raises(AssertionError, match="sink"):
        ex.check_sink_safe_hook(in_place_everywhere)


def test_mean_difference():
    assert "correct" in ex.check_mean_difference(lambda p, n: p.mean(0) - n.mean(0))
    with pytest.raises(AssertionError, match="dim 0"):
        ex.check_mean_difference(lambda p, n: (p - p.mean(0)).sum(0) + p.mean(0) - n.mean(1).mean())


def test_project_out():
    def right(h, u):
        u = u / u.norm()
        return h - (h @ u)[..., None] * u

    assert "correct" in ex.check_project_out(right)
    with pytest.raises(AssertionError, match="Normalise"):
        ex.check_project_out(lambda h, u: h - (h @ u)[..., None] * u)  # u not normalised


def test_sea_projection():
    def right(z, up, un):
        m = (z @ up) @ up.T + z - (z @ un) @ un.T
        return m * z.norm(dim=-1, keepdim=True) / m.norm(dim=-1, keepdim=True)

    def no_rescale(z, up, un):
        return (z @ up) @ up.T + z - (z @ un) @ un.T

    assert "correct" in ex.check_sea_projection(right)
    with pytest.raises(AssertionError, match="edited"):
        ex.check_sea_projection(no_rescale)


def test_ista_step():
    def right(D, y, c, alpha, l1_ratio, step):
        z = c - step * ((c @ D.T - y) @ D + alpha * (1 - l1_ratio) * c)
        return z.sign() * (z.abs() - step * alpha * l1_ratio).clamp_min(0)

    def no_ridge(D, y, c, alpha, l1_ratio, step):  # forgets the l2 term of the gradient
        z = c - step * ((c @ D.T - y) @ D)
        return z.sign() * (z.abs() - step * alpha * l1_ratio).clamp_min(0)

    assert "correct" in ex.check_ista_step(right)
    with pytest.raises(AssertionError, match="one step"):
        ex.check_ista_step(no_ridge)


def test_ascent_step():
    def right(vf, s, alpha):
        s = s.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(vf(s).sum(), s)
        return alpha * g

    assert "correct" in ex.check_ascent_step(right)
    with pytest.raises(AssertionError, match="control"):
        ex.check_ascent_step(lambda vf, s, alpha: right(vf, s, alpha) + s)  # returns s + u, not u


@pytest.mark.integration
def test_resid_norms_on_a_model(tiny_chat):
    from steerlens.generation import encode

    tokens, _ = encode(tiny_chat, ["one two three"])
    _, cache = tiny_chat.run_with_cache(tokens)
    right = cache["blocks.1.hook_resid_post"][0].norm(dim=-1)
    assert "correct" in ex.check_resid_norms(right, tiny_chat, "one two three", 1)
    with pytest.raises(AssertionError, match="norms"):
        ex.check_resid_norms(cache["blocks.0.hook_resid_post"][0].norm(dim=-1), tiny_chat, "one two three", 1)


def test_energy_rank():
    def right(s, k):
        e = (s ** 2).cumsum(0) / (s ** 2).sum()
        return int((e < k - 1e-12).sum()) + 1

    def on_values(s, k):  # energy on the singular values, not their squares
        e = s.cumsum(0) / s.sum()
        return int((e < k - 1e-12).sum()) + 1

    assert "correct" in ex.check_energy_rank(right)
    with pytest.raises(AssertionError, match="squared"):
        ex.check_energy_rank(on_values)


def test_pace_removal():
    assert "correct" in ex.check_pace_removal(lambda z, D, c, u: z - (c * u) @ D.T)
    with pytest.raises(AssertionError, match="reconstruction"):
        ex.check_pace_removal(lambda z, D, c, u: (c * (1 - u)) @ D.T)  # keeps the benign part, drops the residual


def _capstone_namespace():
    """The capstone's section 2 helpers and its ITI solution, executed from the notebook source."""
    cells = _lessons()["09_your_own_method.ipynb"]
    helpers = next(body[0] for kind, *body in cells if kind == "code" and body[0].startswith("def directions"))
    iti = next(body[0] for kind, *body in cells if kind == "exercise" and "class ITI" in body[0])
    solution = iti.split("\n\n\nprint(")[0]
    return helpers.split("\n\n\nzp, zn")[0], solution


def test_iti_check_passes_the_solution_and_fails_a_wrong_one(tiny_chat):
    import torch

    from steerlens.editing import Editor, ModelSpec, TensorSpec
    from steerlens.exercises import check_iti, head_states
    from steerlens.settings import Setting

    helpers, solution = _capstone_namespace()
    ns = {"torch": torch, "Editor": Editor, "ModelSpec": ModelSpec, "TensorSpec": TensorSpec, "Setting": Setting,
          "head_states": head_states}
    exec(helpers, ns)
    exec(solution, ns)
    assert "cache- and batch-safe" in check_iti(ns["ITI"], tiny_chat)
    for wrong, fixed in [("topk(k)", "topk(k, largest=False)"),  # the worst heads
                         ("unit = directions(zp, zn)  # refitted on all pairs", "unit = directions(zn, zp)"),
                         ("'blocks.{layer}.hook_attn_out'", "'blocks.{layer}.hook_resid_post'")]:
        bad = {**ns}
        assert wrong in solution
        exec(solution.replace(wrong, fixed), bad)
        with pytest.raises(AssertionError):
            check_iti(bad["ITI"], tiny_chat)
    with pytest.raises(AssertionError, match="class itself"):
        check_iti(ns["ITI"].fit, tiny_chat)


def test_beats_control_check_fails_rules_that_ignore_the_intervals():
    from steerlens.exercises import check_beats_control

    assert "correct" in check_beats_control(lambda r: r["change_low"] > 0 and r["change_low"] >
                                            r["control"]["change_high"])
    for naive in (lambda r: r["change"] > r["control"]["change"], lambda r: r["change_low"] > 0, lambda r: True):
        with pytest.raises(AssertionError):
            check_beats_control(naive)


# ---- design exercises: the reference solution passes, plausible wrong designs fail ----
# the lessons' own solutions, so the tests check what the notebooks teach
sol = SimpleNamespace(**{name: _solution(name) for name in (
    "is_cache_safe", "positivity", "cancels", "matched_control", "state_dependent", "edit_similarity",
    "chance_angle", "leaks", "effect_interval")})


def test_cache_safety_test():
    assert "correct" in ex.check_cache_safety_test(sol.is_cache_safe)

    def whole_twice(hook_fn):  # compares the hook with itself: never sees the cache
        x = torch.randn(1, 6, 8)
        a, b = hook_fn(x.clone(), None), hook_fn(x.clone(), None)
        return a is None or torch.allclose(a, b)

    def forgets_none(hook_fn):  # the in-place idiom returns None
        x = torch.randn(1, 6, 8)
        whole = hook_fn(x.clone(), None)
        return torch.allclose(whole, torch.cat([hook_fn(x[:, t:t + 1].clone(), None) for t in range(6)], 1))

    with pytest.raises(AssertionError, match="skip position 0"):
        ex.check_cache_safety_test(whole_twice)
    with pytest.raises(AssertionError, match="raised"):
        ex.check_cache_safety_test(forgets_none)


@pytest.mark.integration
def test_effect_measure_on_the_model(model):
    from steerlens.data import contrast_pairs
    from steerlens.methods import ActAdd

    pos, neg = contrast_pairs("sentiment")
    add = ActAdd.fit(model, pos, neg, layers=[15], alpha=0.15, progress=False)
    vector = add.steering_vectors()[15]
    assert "correct" in ex.check_effect_measure(lambda m, h: sol.positivity(m, h), model, vector, 15)

    def leaves_hooks(m, hooks):
        for name, fn in hooks:
            m.add_hook(name, fn)
        return sol.positivity(m, [])

    def ignores_hooks(m, hooks):
        return sol.positivity(m, [])

    with pytest.raises(AssertionError, match="left on the model"):
        ex.check_effect_measure(leaves_hooks, model, vector, 15)
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())  # the check cleaned up
    with pytest.raises(AssertionError, match="rise with the strength"):
        ex.check_effect_measure(ignores_hooks, model, vector, 15)


def test_cancel_test():
    assert "correct" in ex.check_cancel_test(sol.cancels)
    with pytest.raises(AssertionError, match="rotated basis"):
        ex.check_cancel_test(lambda up, un: up.shape == un.shape and torch.allclose(up, un))
    with pytest.raises(AssertionError, match="plane holding"):
        ex.check_cancel_test(lambda up, un: bool((up[:, 0] @ un[:, 0]).abs() > 0.999))


def test_matched_control():
    assert "correct" in ex.check_matched_control(sol.matched_control)

    def any_atoms(coef, D, mask, g):  # same count, drawn from every desirable atom: mostly inactive ones
        out = torch.zeros_like(mask)
        free = (~mask).nonzero().squeeze(1)
        out[free[torch.randperm(len(free), generator=g)[:int(mask.sum())]]] = True
        return out

    with pytest.raises(AssertionError, match="inactive"):
        ex.check_matched_control(any_atoms)
    with pytest.raises(AssertionError, match="inactive|norm"):
        ex.check_matched_control(lambda coef, D, mask, g: ~mask)
    with pytest.raises(AssertionError, match="leave them out"):
        ex.check_matched_control(lambda coef, D, mask, g: mask | sol.matched_control(coef, D, mask, g))


def test_state_dependence_test():
    assert "correct" in ex.check_state_dependence_test(sol.state_dependent)

    def raw_gradients(value_fn, states):  # compares lengths too
        s = states.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(value_fn(s).sum(), s)
        return not torch.allclose(grad, grad[:1].expand_as(grad))

    with pytest.raises(AssertionError, match="squashed linear"):
        ex.check_state_dependence_test(raw_gradients)
    with pytest.raises(AssertionError, match="linear value"):
        ex.check_state_dependence_test(lambda value_fn, states: bool(value_fn(states).std() > 0))


def test_edit_similarity():
    assert "correct" in ex.check_edit_similarity(sol.edit_similarity)
    with pytest.raises(AssertionError, match="rescaling"):
        ex.check_edit_similarity(lambda a, b: float((a * b).sum()))
    with pytest.raises(AssertionError, match="NaN"):
        ex.check_edit_similarity(lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=1, eps=0).mean()))
    with pytest.raises(AssertionError, match="opposite"):
        ex.check_edit_similarity(lambda a, b: abs(sol.edit_similarity(a, b)))


def test_chance_angle():
    assert "correct" in ex.check_chance_angle(sol.chance_angle)

    def uniform_entries(d, k, n, g):  # not isotropic: every entry positive
        return float(torch.stack([principal_angles(torch.rand(d, k, generator=g), torch.rand(d, k, generator=g))[0]
                                  for _ in range(n)]).mean())

    def signed(d, k, n, g):
        a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
        return float(torch.rad2deg(torch.arccos(torch.nn.functional.cosine_similarity(a, b, dim=1))).mean())

    with pytest.raises(AssertionError, match="d=576"):
        ex.check_chance_angle(uniform_entries)
    with pytest.raises(AssertionError, match="d=16"):
        ex.check_chance_angle(signed)


def test_leak_test():
    assert "correct" in ex.check_leak_test(sol.leaks)

    def changes_with_values(td_fn):  # a forward dependence, which detached targets have too
        mask = torch.ones(2, 5, dtype=torch.bool)
        v = torch.randn(2, 5)
        return not torch.allclose(td_fn(v, mask, torch.zeros(2)), td_fn(v + 1, mask, torch.zeros(2)))

    with pytest.raises(AssertionError, match="td_targets"):
        ex.check_leak_test(changes_with_values)


def test_effect_interval():
    assert "correct" in ex.check_effect_interval(sol.effect_interval)

    def unpaired(steered, unsteered, g):
        n = len(steered)
        i, j = torch.randint(n, (2000, n), generator=g), torch.randint(n, (2000, n), generator=g)
        means = steered[i].mean(1) - unsteered[j].mean(1)
        return float(means.quantile(0.025)), float(means.quantile(0.975))

    def per_prompt(steered, unsteered, g):
        diff = steered - unsteered
        return float(diff.quantile(0.025)), float(diff.quantile(0.975))

    with pytest.raises(AssertionError, match="times as wide|covers"):
        ex.check_effect_interval(unpaired)
    with pytest.raises(AssertionError, match="covers"):
        ex.check_effect_interval(per_prompt)
