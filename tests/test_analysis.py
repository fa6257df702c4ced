"""steerlens.analysis: the value-gradient diagnostic on hand-checkable cases and on a tiny model."""

import pytest
import torch

from steerlens.analysis import STATE_HOOK, reference_directions, value_gradient, value_gradient_map
from steerlens.methods.recontrol import LinearValue


class TestValueGradient:
    def test_linear_value_gives_the_cosine_of_w_and_the_reference(self):
        vf = LinearValue(3)
        vf.weight.copy_(torch.tensor([1.0, 1.0, 0.0]))
        out = value_gradient(vf, torch.randn(4, 3), torch.tensor([2.0, 0.0, 0.0]))
        torch.testing.assert_close(out.cosine, torch.full((4,), 2 ** -0.5))
        torch.testing.assert_close(out.gain, torch.full((4,), 2 ** 0.5))
        torch.testing.assert_close(out.gain_reference, torch.ones(4))

    def test_quadratic_value_has_the_state_as_its_gradient(self):
        s = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
        out = value_gradient(lambda x: 0.5 * (x ** 2).sum(-1), s, torch.tensor([1.0, 0.0]))
        torch.testing.assert_close(out.cosine, torch.tensor([0.6, 0.0]))
        torch.testing.assert_close(out.gain, torch.tensor([5.0, 2.0]))
        assert out.summary()["cosine"] == pytest.approx(0.3)

    def test_bad_reference_is_refused(self):
        with pytest.raises(ValueError, match="non-zero"):
            value_gradient(LinearValue(3), torch.randn(2, 3), torch.zeros(3))
        with pytest.raises(ValueError, match="d="):
            value_gradient(LinearValue(3), torch.randn(2, 3), torch.ones(4))


@pytest.mark.integration
class TestOnAModel:
    """On ``tiny_chat`` (a tiny random model with the default model's tokenizer)."""

    def test_reference_directions_are_unit_and_flip_with_the_pairs(self, tiny_chat):
        tiny = tiny_chat
        pos, neg = ["a happy day", "good news"], ["a sad day", "bad news"]
        ref = reference_directions(tiny, pos, neg)
        back = reference_directions(tiny, neg, pos)
        assert set(ref) == {f"blocks.{i}.hook_resid_post" for i in range(tiny.cfg.n_layers)} | {STATE_HOOK}
        for name, r in ref.items():
            assert float(r.norm()) == pytest.approx(1.0, abs=1e-5)
            torch.testing.assert_close(back[name], -r)

    def test_map_has_a_row_per_layer_and_its_last_row_is_the_final_state(self, tiny_chat):
        tiny = tiny_chat
        ref = reference_directions(tiny, ["good"], ["bad"])
        vf = LinearValue(tiny.cfg.d_model)
        vf.weight.copy_(ref[STATE_HOOK] + 0.1)
        out, labels = value_gradient_map(tiny, vf, "the day was fine", ref)
        assert out.cosine.shape == (tiny.cfg.n_layers + 1, len(labels))
        want = float(torch.cosine_similarity(vf.weight, ref[STATE_HOOK], dim=0))
        torch.testing.assert_close(out.cosine[-1], torch.full((len(labels),), want), atol=1e-5, rtol=1e-5)


class TestRemovalProfile:
    def _editor(self, tiny, undesirable):
        from steerlens.editing import ModelSpec
        from steerlens.methods.pace import ConceptDictionary, PaCEEditor

        g = torch.Generator().manual_seed(0)
        atoms = {la: torch.randn(12, tiny.cfg.d_model, generator=g) * 3 for la in (1, 2)}
        dic = ConceptDictionary([f"c{i}" for i in range(12)], atoms, ModelSpec.of(tiny))
        dic.set_partition("t", undesirable)
        return PaCEEditor.from_dictionary(dic, "t", [1, 2], alpha=0.01)

    def test_share_is_what_the_hook_removes(self, tiny_chat):
        from steerlens.analysis import removal_profile

        ed = self._editor(tiny_chat, ["c0", "c3", "c5"])
        context, response = "abc de", "fgh"
        prof = removal_profile(tiny_chat, ed, context, response)
        ids = torch.cat([tiny_chat.tokenizer(t, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
                         for t in (context, response)])
        _, cache = tiny_chat.run_with_cache(ids[None])
        assert len(prof.tokens) == len(ids)
        for i, layer in enumerate((1, 2)):
            z = cache[f"blocks.{layer}.hook_resid_post"][0]
            removed = (z - ed.hook_fn(layer)(z[None], None)[0]).norm(dim=-1) / z.norm(dim=-1)
            torch.testing.assert_close(prof.share[i], removed, atol=1e-5, rtol=1e-4)
        assert prof.prompt_len == len(tiny_chat.tokenizer(context, add_special_tokens=False)["input_ids"]) > 0
        assert prof.share.shape == prof.residual.shape == (2, len(prof.tokens))
        assert int(prof.region("prompt").sum() + prof.region("generated").sum()) == int((~prof.sink).sum())
        assert prof.mean("prompt").shape == (2,)

    def test_breakdown_parts_are_the_code_split_by_kind(self, tiny_chat):
        # the mean atom, benign and undesirable parts are D c split by atom kind: as vectors they add up to D c
        from steerlens.analysis import removal_profile

        ed = self._editor(tiny_chat, ["c0", "c3", "c5"])
        z = torch.randn(7, tiny_chat.cfg.d_model, generator=torch.Generator().manual_seed(1)) * 4
        p = ed.parts(1, z)
        D, c = ed.tensors["atoms.1"], p["coefficients"]
        U = ed.tensors["undesirable"]
        assert not bool(U[0]) and ed.settings["concepts"][0] == "<mean>"
        torch.testing.assert_close(p["mean"], (c[:, :1] @ D[:, :1].T).norm(dim=-1))
        torch.testing.assert_close(p["benign"], (c[:, 1:] * ~U[1:] @ D[:, 1:].T).norm(dim=-1))
        assert bool((p["explained"] <= p["mean"] + p["benign"] + p["removed"] + 1e-5).all())
        prof = removal_profile(tiny_chat, ed, "abc de", "fgh")
        parts = prof.breakdown("all")
        assert set(parts) == {"mean_atom", "benign", "undesirable", "residual"}
        assert all(v.shape == (2,) for v in parts.values())
        assert float(parts["mean_atom"].min()) > 0  # the centred dictionary's shared atom is always used here

    def test_no_undesirable_concept_removes_nothing_and_bad_input_is_refused(self, tiny_chat):
        from steerlens.analysis import removal_profile
        from steerlens.methods import ActAdd

        prof = removal_profile(tiny_chat, self._editor(tiny_chat, []), "abc", "de")
        assert float(prof.share.abs().max()) == 0.0
        assert bool((prof.residual > 0).all())  # a 12-atom dictionary cannot span d=32
        assert torch.isnan(removal_profile(tiny_chat, self._editor(tiny_chat, []), "abc").mean("generated")).all()
        with pytest.raises(ValueError, match="region must be"):
            prof.region("answer")
        with pytest.raises(ValueError, match="PaCE editor"):
            removal_profile(tiny_chat, ActAdd.fit(tiny_chat, ["ab"], ["cd"], layers=[1], progress=False), "abc")


class TestCheckHook:
    """check_hook on three hand-written hooks whose behaviour is known by construction."""

    HOOK = "blocks.1.hook_resid_post"

    def _v(self, model):
        return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 20

    def test_a_constant_shift_passes(self, tiny_chat):
        from steerlens.analysis import check_hook

        v = self._v(tiny_chat)
        result = check_hook(tiny_chat, [(self.HOOK, lambda act, hook: act + v)])
        assert result.ok and not result.problems, str(result)

    def test_a_first_position_edit_fails_under_the_kv_cache(self, tiny_chat):
        from steerlens.analysis import check_hook

        v = self._v(tiny_chat)

        def first_only(act, hook):  # uncached, position 0 is the prompt's first token; cached, each new token
            act = act.clone()
            act[:, 0] += v
            return act
        result = check_hook(tiny_chat, [(self.HOOK, first_only)])
        assert not result.ok
        assert any("without the KV cache" in p for p in result.problems), str(result)

    def test_a_hook_that_mixes_rows_fails_batched(self, tiny_chat):
        from steerlens.analysis import check_hook

        def centre_batch(act, hook):  # alone, a row minus the batch mean is zero
            return act - 3 * act.mean(0, keepdim=True)
        result = check_hook(tiny_chat, [(self.HOOK, centre_batch)])
        assert not result.ok
        assert any("batched" in p for p in result.problems), str(result)
        assert "FAILED" in str(result)

    def test_bad_input_is_refused(self, tiny_chat):
        from steerlens.analysis import check_hook

        with pytest.raises(ValueError, match="Unknown hook"):
            check_hook(tiny_chat, [("blocks.1.hook_resid_pots", lambda a, h: a)])
        with pytest.raises(ValueError, match="two prompts"):
            check_hook(tiny_chat, [], prompts=["one"])


class TestCompareEdits:
    def test_kl_of_known_distributions(self):
        from steerlens.analysis import kl_divergence

        p = torch.tensor([0.5, 0.5]).log()
        q = torch.tensor([0.25, 0.75]).log()
        expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.5 * torch.log(torch.tensor(2 / 3))
        torch.testing.assert_close(kl_divergence(p, q), expected)
        torch.testing.assert_close(kl_divergence(p + 3.0, p), torch.tensor(0.0))  # logits, any offset

    def test_sizes_kl_and_lens_on_known_edits(self, tiny_chat):
        from steerlens.analysis import compare_edits
        from steerlens.methods import ActAdd
        from steerlens.methods.baselines import IdentityEditor

        model = tiny_chat
        act = ActAdd.fit(model, ["good day"], ["bad day"], layers=[1], alpha=1.0, progress=False)
        token = 123  # make the added vector the unembedding column of one token: the lens must read it
        act.tensors["vector.1"] = model.W_U[:, token].detach().clone() * 50
        out = compare_edits(model, {"none": IdentityEditor.fit(model, [0, 2]), "actadd": act}, "one two three")
        n = len(out.tokens)
        assert out.sizes.shape == (2, model.cfg.n_layers + 1, n) and out.kl.shape == (2, n)
        assert float(out.sizes[0].abs().max()) == 0.0 and float(out.kl[0].abs().max()) < 1e-6
        assert bool((out.sizes[1, 1] > 0).all()) and float(out.sizes[1, [0, 2, 3]].abs().max()) == 0.0
        assert bool((out.kl[1] > 0).all())
        assert out.lens["actadd"][1][0] == model.tokenizer.decode([token])
        assert out.lens["none"] == {}
        with pytest.raises(ValueError, match="at least one editor"):
            compare_edits(model, {}, "one")


class TestGeometry:
    def test_principal_angles_of_known_subspaces(self):
        from steerlens.analysis import principal_angles

        e = torch.eye(4)
        a = e[:, :2]                                               # span(e1, e2)
        b = torch.stack([e[:, 0], (e[:, 1] + e[:, 2]) / 2 ** 0.5], 1)  # span(e1, (e2 + e3)/sqrt 2)
        torch.testing.assert_close(principal_angles(a, b), torch.tensor([0.0, 45.0]), atol=1e-3, rtol=0)
        torch.testing.assert_close(principal_angles(a, e[:, 2:]), torch.tensor([90.0, 90.0]), atol=1e-3, rtol=0)
        # scaling and extra dependent columns do not change a span
        torch.testing.assert_close(principal_angles(a * 7, torch.cat([b, b.sum(1, keepdim=True)], 1)),
                                   torch.tensor([0.0, 45.0]), atol=1e-3, rtol=0)

    def test_matches_scipy(self):
        from scipy.linalg import subspace_angles

        from steerlens.analysis import principal_angles

        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(10, 3, generator=g), torch.randn(10, 2, generator=g)
        expected = torch.tensor(sorted(subspace_angles(a.double().numpy(), b.double().numpy()))).float()
        torch.testing.assert_close(principal_angles(a, b), torch.rad2deg(expected), atol=1e-3, rtol=0)
        with pytest.raises(ValueError, match="same d"):
            principal_angles(a, torch.randn(9, 2))

    def test_overlaps_catch_a_cancelling_sea_layer(self, tiny):
        from steerlens.analysis import edit_subspaces, subspace_overlaps
        from steerlens.editing import ModelSpec
        from steerlens.methods.sea import SpectralEditor

        d = tiny.cfg.d_model
        u = torch.nn.functional.normalize(torch.randn(d, 1), dim=0)
        t = {"u_pos.1": u, "u_neg.1": u.clone(), "phi_scale.1": torch.ones(d), "s_pos.1": torch.ones(1),
             "s_neg.1": torch.ones(1)}
        sea = SpectralEditor(model=ModelSpec.of(tiny), layers=[1], settings={"feature_map": "linear"}, tensors=t)
        names, angles = subspace_overlaps(edit_subspaces(sea, 1))
        assert names == ["sea: kept (+)", "sea: removed (-)"] and float(angles[0, 1]) < 0.1
        with pytest.raises(ValueError, match="no layer 2"):
            edit_subspaces(sea, 2)


class TestDivergenceTrace:
    def test_first_divergence_of_known_streams(self):
        from steerlens.analysis import first_divergence

        assert first_divergence([1, 2, 3], [1, 2, 3]) is None
        assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
        assert first_divergence([7], [8, 9]) == 0
        assert first_divergence([1, 2], [1, 2, 4]) == 2  # one stream ended early
        assert first_divergence([], []) is None

    def test_identity_never_diverges_and_a_large_push_does(self, tiny_chat):
        from steerlens.analysis import divergence_trace
        from steerlens.methods import ActAdd
        from steerlens.methods.baselines import IdentityEditor

        model = tiny_chat
        same = divergence_trace(model, IdentityEditor.fit(model, [1]), "one two", max_new_tokens=6, chat=False)
        assert same.first is None and same.gap_unsteered is None
        assert same.steered == same.unsteered and len(same.steered) == 6
        assert float(same.kl.abs().max()) < 1e-6 and float(same.sizes.abs().max()) == 0.0
        assert "are the same" in same._repr_html_()

        act = ActAdd.fit(model, ["good day"], ["bad day"], layers=[1], alpha=1.0, progress=False)
        token = 77  # a push along one token's unembedding column makes that token the steered choice
        act.tensors["vector.1"] = model.W_U[:, token].detach().clone() * 200
        tr = divergence_trace(model, act, "one two", max_new_tokens=5, chat=False)
        assert tr.steered[0] == model.tokenizer.decode([token]) != tr.unsteered[0]
        assert tr.first == 0 and tr.gap_unsteered > 0 and tr.gap_steered > 0
        assert tr.sizes.shape == (1, len(tr.steered)) and bool((tr.sizes > 0).all())
        assert tr.hooks == ["blocks.1.hook_resid_post"] and bool((tr.kl > 0).all())
        html = tr._repr_html_()
        assert "part at new token 0" in html and "outline" in html

    def test_notes_come_from_the_editor(self, tiny_chat):
        from steerlens.analysis import divergence_trace

        ed = TestRemovalProfile()._editor(tiny_chat, ["c0", "c3", "c5"])
        tr = divergence_trace(tiny_chat, ed, "abc de", max_new_tokens=3, chat=False)
        assert len(tr.notes) == len(tr.steered) == 3
        assert all(n.startswith("L2: removed c") or n == "L2: no undesirable concept" for n in tr.notes), tr.notes
        # a note names only undesirable concepts, and says "removed" exactly where the layer-2 hook moved the state
        import re

        row = tr.hooks.index("blocks.2.hook_resid_post")
        for note, size in zip(tr.notes, tr.sizes[row].tolist(), strict=True):
            assert note.startswith("L2: removed") == (size > 0), (note, size)
            assert set(re.findall(r"(c\d+) [+-]", note)) <= {"c0", "c3", "c5"}, note
        assert any(n.startswith("L2: removed") for n in tr.notes), tr.notes

    def test_recontrol_notes_give_the_value_before_and_after(self, tiny_chat):
        import re

        from steerlens.analysis import divergence_trace
        from steerlens.methods.recontrol import LinearValue, ValueController

        vf = LinearValue(tiny_chat.cfg.d_model)
        with torch.no_grad():
            vf.weight.copy_(torch.randn(tiny_chat.cfg.d_model, generator=torch.Generator().manual_seed(0)))
        ctrl = ValueController.from_value(tiny_chat, vf, alpha=0.05, n_steps=4, relative=True)
        tr = divergence_trace(tiny_chat, ctrl, "abc de", max_new_tokens=3, chat=False)
        for note in tr.notes:
            before, after = (float(x) for x in re.fullmatch(r"V ([+-][\d.]+) -> ([+-][\d.]+)", note).groups())
            assert after > before, note  # the ascent climbs V


class TestRandomDirectionControl:
    def test_same_size_per_token_fixed_direction_and_not_saved(self, tiny_chat, tmp_path):
        from steerlens.editing import RandomDirectionControl, recorded_run
        from steerlens.generation import encode
        from steerlens.methods import ActAdd

        model = tiny_chat
        act = ActAdd.fit(model, ["good day"], ["bad day"], layers=[0, 1], alpha=2.0, progress=False)
        control = RandomDirectionControl(act, seed=3)
        tokens, mask = encode(model, ["one two three four"])
        _, base = recorded_run(model, act, tokens, mask)
        _, ctrl = recorded_run(model, control, tokens, mask)
        units = control.directions(list(base), model.cfg.d_model)
        for name, (delta, _) in base.items():
            cdelta = ctrl[name][0]
            torch.testing.assert_close(cdelta.norm(dim=-1), delta.norm(dim=-1), atol=1e-4, rtol=1e-4)
            moved = delta.norm(dim=-1) > 0
            cos = torch.nn.functional.cosine_similarity(cdelta[moved], units[name][None], dim=-1)
            torch.testing.assert_close(cos, torch.ones_like(cos), atol=1e-4, rtol=1e-4)
            # the learned direction is not the control's (in 32 dims a random unit vector is far from it)
            assert float(torch.nn.functional.cosine_similarity(delta[moved], cdelta[moved], dim=-1).abs().max()) < 0.9
        again = RandomDirectionControl(act, seed=3).directions(list(base), model.cfg.d_model)
        assert all(torch.equal(units[n], again[n]) for n in units)
        with pytest.raises(TypeError, match="not saved"):
            control.save(tmp_path / "c")


class TestGeometryTable:
    def test_layers_pairs_and_known_angles(self, tiny_chat):
        from steerlens.analysis import geometry_table
        from steerlens.methods import ActAdd, OrthoProj

        model = tiny_chat
        a = ActAdd.fit(model, ["good day"], ["bad day"], layers=[0, 1], alpha=1.0, progress=False)
        o = OrthoProj.fit(model, ["good day"], ["bad day"], layers=[1], progress=False)
        d = model.cfg.d_model
        e = torch.zeros(d, 1)
        v = a.tensors["vector.1"]
        e[int(v.abs().argmin())] = 1.0  # a basis vector nearly orthogonal to the layer-1 direction
        table = geometry_table([a, o], extra={1: {"probe": e}, 2: {"x": e, "y": e}})
        assert table.layers == [1, 2]  # layer 0 has one subspace only
        col = table.pairs.index("actadd: direction vs orthoproj: removed")
        assert float(table.angles[0, col]) == pytest.approx(0.0, abs=0.05)  # the same mean difference
        want = float(torch.rad2deg(torch.arccos(v.abs().min() / v.norm())))
        assert float(table.angles[0, table.pairs.index("actadd: direction vs probe")]) == pytest.approx(want, abs=0.05)
        assert float(table.angles[1, table.pairs.index("x vs y")]) == pytest.approx(0.0, abs=0.05)
        assert torch.isnan(table.angles[1, col]) and torch.isnan(table.angles[0, table.pairs.index("x vs y")])

    def test_mean_value_gradient_of_a_linear_value_is_its_weight(self, tiny_chat):
        from steerlens.analysis import mean_value_gradient
        from steerlens.methods.recontrol import LinearValue, ValueController

        vf = LinearValue(tiny_chat.cfg.d_model)
        with torch.no_grad():
            vf.weight.copy_(torch.arange(tiny_chat.cfg.d_model, dtype=torch.float32) - 5)
        ctrl = ValueController.from_value(tiny_chat, vf)
        got = mean_value_gradient(tiny_chat, ctrl, ["one two three", "four five"])
        torch.testing.assert_close(got[:, 0], vf.weight / vf.weight.norm())
        with pytest.raises(ValueError, match="at least one text"):
            mean_value_gradient(tiny_chat, ctrl, [])
