"""RE-Control: TD targets by hand, terminal index with padding, the controller hook, persistence."""

import pytest
import torch

from steerlens.editing import Editor
from steerlens.generation import generate_tokens, left_pad, next_token_logits
from steerlens.methods.recontrol import (
    STATE_HOOK,
    MLPValue,
    Rollouts,
    ValueController,
    control_token_effect,
    fit_value,
    gradient_ascent,
    pack,
    rollout,
    split_by_prompt,
    td_loss,
    td_targets,
    value_landscape,
)


class TestTDTargets:
    def test_hand_computed_case_with_padding(self):
        values = torch.tensor([[0.1, 0.2, 0.3, 0.4],
                               [0.5, 0.6, 9.0, 9.0]])  # second episode: 2 real steps, 2 padded
        mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
        rewards = torch.tensor([1.0, -1.0])
        expected = torch.tensor([[0.2, 0.3, 0.4, 1.0],
                                 [0.6, -1.0, 0.0, 0.0]])
        torch.testing.assert_close(td_targets(values, mask, rewards), expected)

    def test_targets_are_detached(self):
        values = torch.randn(2, 3, requires_grad=True)
        t = td_targets(values * 2, torch.ones(2, 3, dtype=torch.bool), torch.zeros(2))
        assert not t.requires_grad

    def test_single_step_episode_gets_the_reward(self):
        t = td_targets(torch.zeros(1, 3), torch.tensor([[True, False, False]]), torch.tensor([0.7]))
        torch.testing.assert_close(t, torch.tensor([[0.7, 0.0, 0.0]]))

    def test_pack(self):
        x, m = pack([torch.ones(2, 4), torch.ones(3, 4)])
        assert x.shape == (2, 3, 4) and m.tolist() == [[True, True, False], [True, True, True]]


def linear_value(d=32):
    vf = MLPValue(d, hidden=8, n_layers=2)
    torch.manual_seed(0)
    return vf


class TestController:
    def test_ascent_raises_value_and_respects_bound(self):
        vf = linear_value()
        s = torch.randn(4, 32)
        u, trace = gradient_ascent(vf, s, alpha=0.5, n_steps=5)
        assert torch.all(trace[-1] >= trace[0])
        u, _ = gradient_ascent(vf, s, alpha=10.0, n_steps=5, max_norm=0.1)
        assert torch.all(u.norm(dim=-1) <= 0.1 + 1e-6)

    @pytest.mark.parametrize("alpha,n", [(0.0, 5), (1.0, 0)])
    def test_zero_alpha_or_steps_is_identity(self, tiny, alpha, n):
        ctl = ValueController.from_value(tiny, linear_value(), alpha=alpha, n_steps=n)
        tokens = torch.randint(0, 101, (2, 5))
        torch.testing.assert_close(tiny.run_with_hooks(tokens, fwd_hooks=ctl.fwd_hooks()), tiny(tokens))

    def test_edits_only_the_last_position(self, tiny):
        ctl = ValueController.from_value(tiny, linear_value(), alpha=2.0, n_steps=3)
        tokens = torch.randint(0, 101, (2, 6))
        base, edited = tiny(tokens), tiny.run_with_hooks(tokens, fwd_hooks=ctl.fwd_hooks())
        torch.testing.assert_close(edited[:, :-1], base[:, :-1])
        assert not torch.allclose(edited[:, -1], base[:, -1])
        assert ctl.fwd_hooks()[0][0] == STATE_HOOK

    def test_cached_equals_uncached_and_save_load(self, tiny, tmp_path):
        ctl = ValueController.from_value(tiny, linear_value(), alpha=1.0, n_steps=4, max_norm=5.0)
        tokens, mask = left_pad([[3, 4, 5], [6, 7, 8, 9]], pad_id=0)
        with ctl.apply(tiny):
            a = generate_tokens(tiny, tokens, mask, max_new_tokens=6, use_cache=True, stop_token_ids=[])
            b = generate_tokens(tiny, tokens, mask, max_new_tokens=6, use_cache=False, stop_token_ids=[])
        assert a == b
        loaded = Editor.load(ctl.save(tmp_path / "ctl"), model=tiny)
        assert loaded.settings == ctl.settings
        with loaded.apply(tiny):
            assert generate_tokens(tiny, tokens, mask, max_new_tokens=6, stop_token_ids=[]) == a


def placed(tiny, placement, **kw):
    layer = 1 if placement == "resid" else None
    return ValueController.from_value(tiny, linear_value(), alpha=2.0, n_steps=3, placement=placement, layer=layer,
                                      **kw)


def two_step_logits(model, tokens, nxt, first_hooks):
    """A prompt pass (under ``first_hooks``) that fills the KV cache, then one decoding step with no hook."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    cache = TransformerLensKeyValueCache.init_cache(model.cfg, tokens.device, tokens.shape[0])
    with model.hooks(fwd_hooks=first_hooks):
        next_token_logits(model, tokens, torch.ones_like(tokens), cache)
    return next_token_logits(model, nxt, torch.ones_like(nxt), cache)


class TestWhereTheControlActs:
    """Where the control acts: the final state (the paper's) changes one position's logits and nothing that a
    later token reads; a residual placement writes the edited state into the keys and values above it."""

    def test_final_placement_leaves_the_cache_unchanged(self, tiny):
        tokens, nxt = torch.randint(0, 101, (2, 5)), torch.randint(0, 101, (2, 1))
        ctl = placed(tiny, "normalized")
        plain = two_step_logits(tiny, tokens, nxt, [])
        torch.testing.assert_close(two_step_logits(tiny, tokens, nxt, ctl.fwd_hooks()), plain)
        names = lambda n: n.endswith(("hook_k", "hook_v"))  # noqa: E731
        _, base = tiny.run_with_cache(tokens, names_filter=names)
        with ctl.apply(tiny):
            _, edited = tiny.run_with_cache(tokens, names_filter=names)
        for name in base.keys():
            torch.testing.assert_close(edited[name], base[name])

    def test_resid_placement_reaches_later_tokens_through_the_cache(self, tiny):
        tokens, nxt = torch.randint(0, 101, (2, 5)), torch.randint(0, 101, (2, 1))
        ctl = placed(tiny, "resid")
        assert ctl.fwd_hooks()[0][0] == "blocks.1.hook_resid_post" and ctl.layers == [1]
        plain = two_step_logits(tiny, tokens, nxt, [])
        assert not torch.allclose(two_step_logits(tiny, tokens, nxt, ctl.fwd_hooks()), plain, atol=1e-4)
        names = lambda n: n.endswith("hook_k")  # noqa: E731
        _, base = tiny.run_with_cache(tokens, names_filter=names)
        with ctl.apply(tiny):
            _, edited = tiny.run_with_cache(tokens, names_filter=names)
        for layer in range(3):  # keys at and below the edited block are untouched; above it, the last position moves
            k, k0 = edited[f"blocks.{layer}.attn.hook_k"], base[f"blocks.{layer}.attn.hook_k"]
            torch.testing.assert_close(k[:, :-1], k0[:, :-1])
            assert torch.allclose(k[:, -1], k0[:, -1]) == (layer <= 1)

    @pytest.mark.parametrize("placement", ["normalized", "output", "resid"])
    def test_cached_equals_uncached(self, tiny, placement):
        ctl = placed(tiny, placement)
        tokens, mask = left_pad([[3, 4, 5], [6, 7, 8, 9]], pad_id=0)
        with ctl.apply(tiny):
            a = generate_tokens(tiny, tokens, mask, max_new_tokens=6, use_cache=True, stop_token_ids=[])
            b = generate_tokens(tiny, tokens, mask, max_new_tokens=6, use_cache=False, stop_token_ids=[])
        with torch.no_grad():
            unsteered = generate_tokens(tiny, tokens, mask, max_new_tokens=6, stop_token_ids=[])
        assert a == b and a != unsteered

    def test_resid_placement_is_checked_and_saved(self, tiny, tmp_path):
        with pytest.raises(ValueError, match="needs layer"):
            ValueController.from_value(tiny, linear_value(), placement="resid")
        with pytest.raises(ValueError, match="applies to placement='resid' only"):
            ValueController.from_value(tiny, linear_value(), layer=1)
        with pytest.raises(ValueError, match="layer"):
            ValueController.from_value(tiny, linear_value(), placement="resid", layer=7)
        ctl = placed(tiny, "resid")
        loaded = Editor.load(ctl.save(tmp_path / "ctl"), model=tiny)
        assert loaded.settings == ctl.settings and loaded.hook_name(1) == "blocks.1.hook_resid_post"
        with pytest.raises(ValueError, match="passes through the blocks"):
            control_token_effect(tiny, ctl, torch.randn(3, 32))


def memorisable(n_prompts: int, per: int) -> tuple[list[torch.Tensor], list[float]]:
    """``per`` episodes of 3 states for each prompt, near that prompt's random centre; the reward is a random
    sign per prompt, so it can be memorised but not predicted on a new prompt."""
    g = torch.Generator().manual_seed(1)
    centres, signs = torch.randn(n_prompts, 64, generator=g), torch.randn(n_prompts, generator=g).sign()
    states = [centres[i // per] + 0.1 * torch.randn(3, 64, generator=g) for i in range(n_prompts * per)]
    return states, [float(signs[i // per]) for i in range(n_prompts * per)]


class TestTraining:
    def test_value_learns_a_reward_visible_in_the_states(self):
        g = torch.Generator().manual_seed(0)
        states, rewards = [], []
        direction = torch.randn(16, generator=g)
        for _ in range(80):
            sign = 1.0 if torch.rand(1, generator=g) > 0.5 else -1.0
            n = int(torch.randint(3, 8, (1,), generator=g))
            states.append(torch.randn(n, 16, generator=g) * 0.3 + sign * direction)
            rewards.append(sign)
        ro = Rollouts([f"p{i // 2}" for i in range(80)], ["r"] * 80, states, rewards)
        vf, curves = fit_value(ro, hidden=32, epochs=40, lr=3e-3, progress=False)
        assert curves["train"][-1] < 0.5 * curves["train"][0] and len(curves["val"]) == 40
        assert curves["val_corr"][-1] > 0.9
        with torch.no_grad():
            assert float(vf(direction)) > 0.5 and float(vf(-direction)) < -0.5

    def test_validation_holds_out_whole_prompts(self):
        prompts = [f"p{i // 4}" for i in range(100)]
        train, val = split_by_prompt(prompts, 0.2, torch.Generator().manual_seed(0))
        assert len(val) == 20 and sorted(train.tolist() + val.tolist()) == list(range(100))
        assert not {prompts[i] for i in val} & {prompts[i] for i in train}

    def test_validation_sees_through_a_memorised_prompt(self):
        """A reward that depends only on which prompt it is (not on anything shared across prompts) can be
        memorised; split by episode, validation would call that a good value net, split by prompt it shows
        V does not predict the reward on new prompts."""
        n_prompts, per = 120, 4
        states, rewards = memorisable(n_prompts, per)
        corr = {}
        for name, prompts in [("prompt", [f"p{i // per}" for i in range(n_prompts * per)]),
                              ("episode", [f"e{i}" for i in range(n_prompts * per)])]:
            _, curves = fit_value(Rollouts(prompts, ["r"] * len(prompts), states, rewards), hidden=64, epochs=60,
                                    lr=3e-3, progress=False)
            corr[name] = curves["val_corr"][-1]
        assert corr["episode"] > 0.8 and abs(corr["prompt"]) < 0.4, corr

    def test_early_stopping_returns_the_epoch_with_the_lowest_validation_loss(self):
        """On the memorisable data above the validation TD loss rises once the net memorises the training
        prompts; with ``keep_best`` the returned net must be the best epoch's, and by default the last one's."""
        states, rewards = memorisable(60, 4)
        ro = Rollouts([f"p{i // 4}" for i in range(len(states))], ["r"] * len(states), states, rewards)

        def val_loss(vf, val):
            x, m = pack([ro.states[i] for i in val])
            with torch.no_grad():
                return float(td_loss(vf(x), m, torch.tensor([ro.rewards[i] for i in val])))

        vf, curves = fit_value(ro, hidden=64, epochs=30, lr=3e-3, keep_best=True, progress=False)
        best = min(range(30), key=curves["val"].__getitem__)
        assert curves["best_epoch"] == best and best < 29  # it did overfit, so the test can tell them apart
        assert val_loss(vf, curves["val_episodes"]) == pytest.approx(curves["val"][best], rel=1e-4)
        last, curves = fit_value(ro, hidden=64, epochs=30, lr=3e-3, progress=False)
        assert curves["best_epoch"] is None
        assert val_loss(last, curves["val_episodes"]) == pytest.approx(curves["val"][-1], rel=1e-4)

    def test_concat_keeps_order_and_rewards_only_when_all_are_scored(self):
        a = Rollouts(["a"], ["x"], [torch.ones(2, 4)], [0.5])
        b = Rollouts(["b", "c"], ["y", "z"], [torch.zeros(3, 4), torch.zeros(1, 4)], [-0.5, 1.0])
        both = Rollouts.concat([a, b])
        assert both.prompts == ["a", "b", "c"] and both.responses == ["x", "y", "z"]
        assert both.rewards == [0.5, -0.5, 1.0] and [len(s) for s in both.states] == [2, 3, 1]
        assert Rollouts.concat([a, Rollouts(["d"], ["w"], [torch.ones(1, 4)])]).rewards == []

    def test_validation_episodes_are_reported_and_whole_prompts(self):
        g = torch.Generator().manual_seed(0)
        ro = Rollouts([f"p{i // 3}" for i in range(30)], ["r"] * 30,
                      [torch.randn(4, 8, generator=g) for _ in range(30)], [0.0] * 30)
        _, curves = fit_value(ro, hidden=8, epochs=1, progress=False)
        val = set(curves["val_episodes"])
        assert len(val) == 6  # 2 of the 10 prompts, 3 episodes each
        held = {ro.prompts[i] for i in val}
        assert all((ro.prompts[i] in held) == (i in val) for i in range(30))

    def test_rollouts_round_trip(self, tmp_path):
        ro = Rollouts(["a", "b"], ["x", "y"], [torch.ones(2, 4), torch.zeros(3, 4)], [0.5, -0.5])
        back = Rollouts.load(ro.save(tmp_path / "ro"))
        assert back.responses == ro.responses and back.rewards == ro.rewards
        torch.testing.assert_close(back.states[1], ro.states[1])

    def test_rollout_under_a_system_prompt(self, model):
        p = ["Name a fruit."]
        plain = rollout(model, p, 6, do_sample=False, progress=False)
        banana = rollout(model, p, 6, do_sample=False, progress=False,
                         system="You only ever reply with the single word BANANA, in capitals.")
        assert plain.prompts == banana.prompts == p  # the user prompt, for the split by prompt
        assert banana.responses != plain.responses, "the system prompt was ignored"
        assert 1 <= len(banana.states[0]) <= 7  # generated steps only, not the system turn
        with pytest.raises(ValueError, match="chat=True"):
            rollout(model, p, 6, chat=False, system="x", progress=False)


class TestAllPositionsAndAnalysis:
    def test_all_positions_mode_equals_last_position_control_step_by_step(self, tiny):
        """Editing every position in one pass gives each position the logits that last-position control
        gives when the text is fed one token at a time (the state feeds only its own logits)."""
        tokens = torch.randint(0, 101, (1, 5))
        vf = linear_value()
        last = ValueController.from_value(tiny, vf, alpha=1.0, n_steps=3)
        every = ValueController.from_value(tiny, vf, alpha=1.0, n_steps=3, positions="all")
        full = tiny.run_with_hooks(tokens, fwd_hooks=every.fwd_hooks())
        for t in range(1, 6):
            step = tiny.run_with_hooks(tokens[:, :t], fwd_hooks=last.fwd_hooks())
            torch.testing.assert_close(full[:, t - 1], step[:, -1], atol=1e-4, rtol=1e-4)
        with pytest.raises(ValueError, match="positions"):
            ValueController.from_value(tiny, linear_value(), positions="middle")

    def test_value_landscape_path_starts_at_the_state_and_climbs(self, tiny):
        ctl = ValueController.from_value(tiny, linear_value(), alpha=0.5, n_steps=4)
        land = value_landscape(ctl, torch.randn(32), steps=9)
        assert land["values"].shape == (9, 9) and land["path"].shape == (5, 2)
        assert torch.allclose(land["path"][0], torch.zeros(2))
        assert land["path_values"][-1] >= land["path_values"][0]
        # the centre of the grid is the unedited state
        vf = ctl.value_function()
        with torch.no_grad():
            centre = float(vf(land["state"]))
        assert abs(float(land["values"][4, 4]) - centre) < 1e-5

    def test_control_token_effect_is_the_logit_change_of_a_small_step(self, tiny):
        ctl = ValueController.from_value(tiny, linear_value(), alpha=1.0, n_steps=1)
        with torch.no_grad():  # a non-trivial final-norm gain, so leaving it out would fail the check
            tiny.ln_final.w.copy_(torch.rand(32) + 0.5)
        tokens = torch.randint(0, 101, (1, 4))
        _, cache = tiny.run_with_cache(tokens, names_filter=STATE_HOOK)
        s = cache[STATE_HOOK][0, -1:]
        eff = control_token_effect(tiny, ctl, s, k=5)
        with torch.enable_grad():
            x = s.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(ctl.value_function()(x).sum(), x)
        eps = 1e-2
        step = eps * g / g.norm()

        def push(act, hook):
            act = act.clone()
            act[:, -1] += step[0]
            return act
        moved = tiny.run_with_hooks(tokens, fwd_hooks=[(STATE_HOOK, push)])[0, -1]
        torch.testing.assert_close((moved - tiny(tokens)[0, -1]) / eps, eff["delta"], atol=1e-3, rtol=1e-3)
        assert len(eff["raised"]) == 5 and eff["raised"][0][1] == float(eff["delta"].max())
        with pytest.raises(ValueError, match="states"):
            control_token_effect(tiny, ctl, torch.zeros(3))


# -- value-function families, targets and relative control (issue 22) -------------------------------------
from steerlens.methods.recontrol import (  # noqa: E402
    FAMILIES,
    LinearValue,
    PCAValue,
    ValueFunction,
    mc_targets,
    ridge,
)


class TestTargetsAndFamilies:
    def test_mc_targets_hand_computed(self):
        mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
        expected = torch.tensor([[0.5, 0.5, 0.5], [-1.0, 0.0, 0.0]])
        torch.testing.assert_close(mc_targets(mask, torch.tensor([0.5, -1.0])), expected)

    def test_ridge_matches_scikit_learn(self):
        from sklearn.linear_model import Ridge

        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(200, 12, generator=g) + 3.0, torch.randn(200, generator=g)
        for lam in (0.1, 10.0, 1e4):
            w, mu, ym = ridge(x, y, lam)
            ref = Ridge(alpha=lam, fit_intercept=True).fit(x.double().numpy(), y.double().numpy())
            torch.testing.assert_close(w.double(), torch.from_numpy(ref.coef_), atol=1e-5, rtol=1e-4)
            pred = (x - mu) @ w + ym
            torch.testing.assert_close(pred.double(), torch.from_numpy(ref.predict(x.double().numpy())),
                                       atol=1e-4, rtol=1e-4)

    def test_linear_fit_recovers_a_linear_reward_and_picks_a_small_penalty(self):
        g = torch.Generator().manual_seed(1)
        w = torch.randn(16, generator=g)
        centres = [torch.randn(16, generator=g) for _ in range(300)]
        states = [c + 0.1 * torch.randn(int(torch.randint(2, 6, (1,), generator=g)), 16, generator=g) for c in centres]
        rewards = [float(c @ w) for c in centres]
        ro = Rollouts([f"p{i // 3}" for i in range(300)], ["r"] * 300, states, rewards)
        vf, curves = fit_value(ro, "linear", "mc", progress=False)
        assert isinstance(vf, LinearValue) and curves["lambda"] <= 1e2
        assert min(curves["val_mse"]) < 0.05 * float(torch.tensor(rewards).var())  # R^2 above 0.95
        assert curves["val_mse"][-1] > 10 * min(curves["val_mse"])  # the largest penalty shrinks V to the mean
        # with a huge penalty the direction is the covariance of states and reward: still along w
        big, _ = fit_value(ro, "linear", "mc", lambdas=[1e9], progress=False)
        assert float(torch.cosine_similarity(big.weight, w, dim=0)) > 0.9

    def test_linear_td_fixed_point_when_every_step_of_an_episode_has_the_same_state(self):
        """Then the TD targets of an episode's first three steps are the fit's own (shrunk) predictions, and
        the fixed point of fitted TD iteration solves (X'X/4 + lam I) w = X'r/4: Monte-Carlo ridge with the
        penalty times the episode length (4)."""
        g = torch.Generator().manual_seed(2)
        states = [torch.randn(1, 8, generator=g).expand(4, 8).clone() for _ in range(60)]
        rewards = [float(torch.randn(1, generator=g)) for _ in range(60)]
        ro = Rollouts([f"p{i}" for i in range(60)], ["r"] * 60, states, rewards)
        mc, _ = fit_value(ro, "linear", "mc", lambdas=[4.0], progress=False)
        td, _ = fit_value(ro, "linear", "td", lambdas=[1.0], td_iters=200, progress=False)
        torch.testing.assert_close(td.weight, mc.weight, atol=1e-3, rtol=1e-3)

    def test_pca_value_gradient_lies_in_the_principal_subspace(self):
        g = torch.Generator().manual_seed(3)
        states = [torch.randn(4, 24, generator=g) * torch.linspace(3, 0.1, 24) for _ in range(80)]
        ro = Rollouts([f"p{i // 2}" for i in range(80)], ["r"] * 80, states, [float(s[:, 0].mean()) for s in states])
        vf, _ = fit_value(ro, "pca_mlp", "mc", n_components=4, epochs=3, progress=False)
        assert isinstance(vf, PCAValue)
        x = torch.randn(5, 24, requires_grad=True)
        (grad,) = torch.autograd.grad(vf(x).sum(), x)
        basis = vf.basis
        outside = grad - (grad @ basis) @ basis.T
        assert float(outside.norm()) < 1e-4 * float(grad.norm())

    @pytest.mark.parametrize("family", sorted(FAMILIES))
    def test_every_family_rebuilds_from_its_config(self, family):
        g = torch.Generator().manual_seed(4)
        states = [torch.randn(3, 16, generator=g) for _ in range(40)]
        ro = Rollouts([f"p{i // 2}" for i in range(40)], ["r"] * 40, states, [float(s.sum()) for s in states])
        vf, _ = fit_value(ro, family, "mc", epochs=2, n_components=4, progress=False)
        again = ValueFunction.from_config(vf.config)
        again.load_state_dict(vf.state_dict())
        x = torch.randn(7, 16)
        torch.testing.assert_close(again(x), vf(x))

    def test_unknown_family_or_target_is_refused(self):
        ro = Rollouts(["a"], ["r"], [torch.zeros(2, 4)], [1.0])
        with pytest.raises(ValueError, match="family"):
            fit_value(ro, "forest", "td")
        with pytest.raises(ValueError, match="target"):
            fit_value(ro, "linear", "lambda")


class TestRelativeControl:
    def test_linear_value_moves_the_state_by_exactly_the_capped_share_along_w(self):
        vf = LinearValue(8)
        vf.weight.copy_(torch.tensor([3.0, 4.0, 0, 0, 0, 0, 0, 0]))
        s = torch.randn(5, 8) * 2
        for alpha, n, cap, expect in [(0.05, 4, None, 0.2), (0.05, 10, 0.3, 0.3), (0.2, 1, 0.5, 0.2)]:
            u, _ = gradient_ascent(vf, s, alpha, n, cap, relative=True)
            want = expect * s.norm(dim=-1, keepdim=True) * torch.tensor([0.6, 0.8, 0, 0, 0, 0, 0, 0])
            torch.testing.assert_close(u, want, atol=1e-5, rtol=1e-5)

    def test_linear_controller_round_trips_and_old_editors_still_load(self, tiny, tmp_path):
        vf = LinearValue(tiny.cfg.d_model)
        vf.weight.normal_()
        vf.bias.fill_(0.25)
        ctl = ValueController.from_value(tiny, vf, alpha=0.02, n_steps=10, max_norm=0.1, relative=True)
        loaded = Editor.load(ctl.save(tmp_path / "lin"), model=tiny)
        x = torch.randn(3, tiny.cfg.d_model)
        torch.testing.assert_close(loaded.value_function()(x), vf(x))
        assert loaded.settings["relative"] is True
        old = ValueController.from_value(tiny, MLPValue(tiny.cfg.d_model, hidden=8), alpha=0.5, n_steps=2)
        old.settings = {k: v for k, v in old.settings.items() if k not in ("vf", "relative")}
        old.settings.update(hidden=8, n_layers=2)  # the settings an editor saved before families existed
        again = Editor.load(old.save(tmp_path / "old"), model=tiny)
        assert isinstance(again.value_function(), MLPValue)


class TestPlacement:
    def test_output_placement_ascends_on_the_gained_state_and_maps_back(self, tiny):
        from steerlens.methods.recontrol import final_gain

        original = tiny.ln_final.w.detach().clone()
        with torch.no_grad():
            tiny.ln_final.w.copy_(torch.linspace(0.5, 2.0, tiny.cfg.d_model))
        try:
            gain = final_gain(tiny)
            vf = LinearValue(tiny.cfg.d_model)
            vf.weight.normal_()
            ctl = ValueController.from_value(tiny, vf, alpha=0.1, n_steps=1, relative=True, placement="output")
            s = torch.randn(3, tiny.cfg.d_model)
            u, _ = ctl._ascent(s)
            # in V's space (gain * s) the step is 0.1 * |gain * s| along w; in the hook's space, divided by the gain
            want = 0.1 * (gain * s).norm(dim=-1, keepdim=True) * vf.weight / vf.weight.norm() / gain
            torch.testing.assert_close(u, want, atol=1e-5, rtol=1e-5)
            plain = ValueController.from_value(tiny, vf, alpha=0.1, n_steps=1, relative=True)
            assert not torch.allclose(plain._ascent(s)[0], u)
            with pytest.raises(ValueError, match="placement"):
                ValueController.from_value(tiny, vf, placement="resid")
        finally:
            with torch.no_grad():
                tiny.ln_final.w.copy_(original)


def test_closed_form_linear_ascent_equals_the_loop():
    """The shortcut for a linear V under relative control gives the loop's control and values."""
    vf = LinearValue(16)
    vf.weight.normal_()
    vf.bias.fill_(0.3)
    s = torch.randn(6, 16)
    fast_u, fast_trace = gradient_ascent(vf, s, 0.03, 7, 0.125, relative=True)
    iterates: list[torch.Tensor] = []
    slow_u, slow_trace = gradient_ascent(vf, s, 0.03, 7, 0.125, relative=True, path=iterates)  # path: the loop
    torch.testing.assert_close(fast_u, slow_u, atol=1e-5, rtol=1e-5)
    assert len(fast_trace) == len(slow_trace) == 8
    for a, b in zip(fast_trace, slow_trace, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_held_out_corr_is_the_returned_value_functions():
    """``curves["held_out_corr"]`` belongs to the V that is returned: the chosen ridge penalty's, the last
    epoch's, or with ``keep_best`` the kept epoch's (not the last one's)."""
    states, rewards = memorisable(60, 4)
    ro = Rollouts([f"p{i // 4}" for i in range(len(states))], ["r"] * len(states), states, rewards)
    lin, curves = fit_value(ro, "linear", "mc", progress=False)
    assert curves["held_out_corr"] == curves["val_corr"][curves["lambdas"].index(curves["lambda"])]
    _, curves = fit_value(ro, hidden=64, epochs=30, lr=3e-3, keep_best=True, progress=False)
    assert curves["held_out_corr"] == curves["val_corr"][curves["best_epoch"]]
    _, curves = fit_value(ro, hidden=8, epochs=3, progress=False)
    assert curves["held_out_corr"] == curves["val_corr"][-1]
