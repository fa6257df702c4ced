"""SEA maths on plain tensors, and the editor on a tiny random model."""

import pytest
import torch

from steerlens.data import contrast_pairs
from steerlens.editing import Editor, ModelSpec
from steerlens.generation import generate_tokens, left_pad
from steerlens.methods.sea import (
    Demonstrations,
    SpectralEditor,
    cross_covariance,
    energy_rank,
    pair_demonstrations,
    phi,
    phi_inverse,
    spectral_bases,
    spectral_edit,
    spectrum_owners,
)


def toy_acts(n=300, d=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g)
    mix = torch.randn(d, d, generator=g) / d**0.5
    hp = h @ mix + 0.1 * torch.randn(n, d, generator=g)
    hn = h @ mix.T + 0.1 * torch.randn(n, d, generator=g)
    return h, hp, hn


class TestSpectralMaths:
    def test_cross_covariance_matches_numpy(self):
        h, hp, _ = toy_acts()
        ref = h.double().numpy().T @ hp.double().numpy() / h.shape[0]
        torch.testing.assert_close(cross_covariance(h, hp), torch.from_numpy(ref))
        assert cross_covariance(h, hp).dtype == torch.float64

    def test_energy_rank(self):
        s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
        assert energy_rank(s, 9 / 14) == 1
        assert energy_rank(s, 0.9) == 2
        assert energy_rank(s, 1.0) == 3
        with pytest.raises(ValueError):
            energy_rank(s, 0.0)

    def test_projections_idempotent_and_orthogonal(self):
        h, hp, hn = toy_acts()
        u_pos, u_neg, _ = spectral_bases(h, hp, hn, 0.9, 0.9)
        for u in (u_pos, u_neg):
            torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1]), atol=1e-5, rtol=0)
            p = u @ u.T
            torch.testing.assert_close(p @ p, p, atol=1e-5, rtol=0)
            torch.testing.assert_close(p, p.T)
        p_neg = torch.eye(24) - u_neg @ u_neg.T
        torch.testing.assert_close(p_neg @ p_neg, p_neg, atol=1e-5, rtol=0)

    def test_full_energy_without_negative_removal_is_identity(self):
        h, hp, hn = toy_acts()  # n > d: full-rank cross-covariance
        u_pos, u_neg, _ = spectral_bases(h, hp, hn, 1.0, None)
        assert u_pos.shape == (24, 24) and u_neg.shape == (24, 0)
        z = torch.randn(2, 5, 24)
        torch.testing.assert_close(spectral_edit(z, u_pos, u_neg), z, atol=1e-4, rtol=1e-4)

    def test_edit_keeps_norm_and_removes_negative_subspace(self):
        h, hp, hn = toy_acts()
        u_pos, u_neg, _ = spectral_bases(h, hp, hn, 0.8, 0.5)
        z = torch.randn(7, 24)
        out = spectral_edit(z, u_pos, u_neg)
        torch.testing.assert_close(out.norm(dim=-1), z.norm(dim=-1))
        # the negative part is projected out of z-; the removed component shrinks relative to the input
        assert ((out @ u_neg).norm() / out.norm()) < ((z @ u_neg).norm() / z.norm())

    @pytest.mark.parametrize("kind", ["linear", "tanh", "elu", "sqexp"])
    def test_phi_round_trips(self, kind):
        x = torch.randn(50, 8)
        scale = torch.full((8,), 3.0)
        back = phi_inverse(phi(x, kind, scale), kind, scale, sign_of=x)
        torch.testing.assert_close(back, x, atol=1e-3, rtol=1e-3)


class TestEditor:
    def fitted(self, model, feature_map="linear", k_neg=0.9):
        d = model.cfg.d_model
        h, hp, hn = toy_acts(n=200, d=d)
        acts = {"neutral": {1: h * 5}, "positive": {1: hp * 5}, "negative": {1: hn * 5}}
        return SpectralEditor.fit_activations(ModelSpec.of(model), acts, [1], 0.95, k_neg, feature_map)

    def test_stores_bases_not_square_matrices(self, tiny):
        ed = self.fitted(tiny)
        k_pos, k_neg = ed.kept_ranks()[1]
        assert ed.tensors["u_pos.1"].shape == (32, k_pos) and ed.tensors["u_neg.1"].shape == (32, k_neg)
        assert 0 < k_neg < 32

    @pytest.mark.parametrize("feature_map", ["linear", "tanh"])
    def test_edit_commutes_with_kv_cache(self, tiny, feature_map):
        ed = self.fitted(tiny, feature_map)
        tokens, mask = left_pad([[3, 4, 5, 6], [7, 8]], pad_id=0)
        with ed.apply(tiny):
            a = generate_tokens(tiny, tokens, mask, max_new_tokens=6, use_cache=True, stop_token_ids=[])
            b = generate_tokens(tiny, tokens, mask, max_new_tokens=6, use_cache=False, stop_token_ids=[])
        assert a == b

    def test_edit_changes_output_and_save_load(self, tiny, tmp_path):
        ed = self.fitted(tiny, "elu")
        tokens = torch.randint(0, 101, (1, 6))
        out = tiny.run_with_hooks(tokens, fwd_hooks=ed.fwd_hooks())
        assert not torch.allclose(out, tiny(tokens))
        loaded = Editor.load(ed.save(tmp_path / "sea"), model=tiny)
        assert loaded.settings == ed.settings and loaded.kept_ranks() == ed.kept_ranks()
        torch.testing.assert_close(tiny.run_with_hooks(tokens, fwd_hooks=loaded.fwd_hooks()), out)


class TestDemonstrations:
    def test_pair_demonstrations_split_shared_prefix(self):
        d = pair_demonstrations(["I had a wonderful day."], ["I had a miserable day."])
        assert d.prompts == ["I had a"] and d.positive == ["wonderful day."] and d.negative == ["miserable day."]
        assert not d.chat

    @pytest.mark.parametrize("task", ["toxicity", "sentiment"])
    def test_pair_texts_are_the_pairs_as_written(self, task):
        """Pairs that share no first word (most toxicity pairs) must not borrow the positive's first word:
        a stray 'Thank' before 26 of the 40 toxic sentences once turned ActAdd's detox direction by 60
        degrees."""
        from types import SimpleNamespace

        pos, neg = contrast_pairs(task)
        d = pair_demonstrations(pos, neg)
        model = SimpleNamespace(tokenizer=None)  # raw prompts: the tokenizer is not used
        assert d.texts(model, "positive") == [" ".join(p.split()) for p in pos]
        assert d.texts(model, "negative") == [" ".join(n.split()) for n in neg]
        d = pair_demonstrations(["Thank you, friend."], ["Get lost, idiot."])
        assert d.prompts == [""] and d.texts(model, "negative") == ["Get lost, idiot."]

    def test_mismatched_lengths_are_errors(self):
        with pytest.raises(ValueError, match="same length"):
            Demonstrations(["a", "b"], ["x"], ["y", "z"])
        with pytest.raises(ValueError, match="No demonstrations"):
            Demonstrations([], [], [])


def test_facts_demonstrations_pair_true_with_false():
    from steerlens.methods.sea import facts_demonstrations

    d = facts_demonstrations(["Water is wet.", "The sun is cold.", "Cats are mammals.", "Fish can fly."], [1, 0, 1, 0])
    assert d.positive == ["Water is wet.", "Cats are mammals."]
    assert sorted(d.negative) == ["Fish can fly.", "The sun is cold."]
    with pytest.raises(ValueError, match="both true"):
        facts_demonstrations(["a"], [1])


def test_truthfulqa_demonstrations_use_best_and_an_incorrect_answer():
    from steerlens.methods.sea import truthfulqa_demonstrations

    rows = [{"question": "Q1?", "best": "B1", "incorrect": ["W1", "W2"]},
            {"question": "Q2?", "best": "B2", "incorrect": ["W3"]}]
    d = truthfulqa_demonstrations(rows)
    assert d.prompts == ["Q1?", "Q2?"] and d.positive == ["B1", "B2"] and d.chat
    assert d.negative[0] in {"W1", "W2"} and d.negative[1] == "W3"


def test_truthfulqa_demonstrations_all_answers_pair_every_answer():
    from steerlens.methods.sea import truthfulqa_demonstrations

    rows = [{"question": "Q1?", "best": "B1", "correct": ["B1", "C1", "C2"], "incorrect": ["W1", "W2"]},
            {"question": "Q2?", "best": "B2", "correct": ["B2"], "incorrect": ["W3"]}]
    d = truthfulqa_demonstrations(rows, answers="all")
    assert d.prompts == ["Q1?"] * 3 + ["Q2?"]
    assert d.positive == ["B1", "C1", "C2", "B2"] and d.negative == ["W1", "W2", "W1", "W3"]
    with pytest.raises(ValueError, match="answers"):
        truthfulqa_demonstrations(rows, answers="some")


def test_cancelled_layers_are_those_where_the_edit_is_the_identity(tiny):
    """k+ = k- with the same subspace: Eq. 4 returns z (the notebook's black heatmap rows); detected."""
    d = tiny.cfg.d_model
    q = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))[0]
    same = {"u_pos.1": q[:, :1].contiguous(), "u_neg.1": q[:, :1].contiguous(), "phi_scale.1": torch.ones(d)}
    other = {"u_pos.2": q[:, :1].contiguous(), "u_neg.2": q[:, 1:2].contiguous(), "phi_scale.2": torch.ones(d)}
    editor = SpectralEditor(model=ModelSpec.of(tiny), layers=[1, 2], settings={"feature_map": "linear"},
                            tensors={**same, **other})
    assert editor.cancelled_layers() == [1]
    z = torch.randn(2, 3, d)
    torch.testing.assert_close(spectral_edit(z, same["u_pos.1"], same["u_neg.1"]), z, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(spectral_edit(z, other["u_pos.2"], other["u_neg.2"]), z, atol=1e-3)


class TestCentredSEA:
    """steerlens's centred variant: the statistics and the edit ignore a component every state shares."""

    def test_centred_bases_ignore_a_shared_offset(self):
        h, hp, hn = toy_acts()
        shift = 40.0 * torch.randn(24, generator=torch.Generator().manual_seed(3))
        a = spectral_bases(h, hp, hn, 0.8, 0.8, centre=True)
        b = spectral_bases(h + shift, hp + shift, hn + shift, 0.8, 0.8, centre=True)
        for x, y in zip(a[:2], b[:2], strict=True):  # same subspaces (projections), up to signs of the columns
            torch.testing.assert_close(x @ x.T, y @ y.T, atol=1e-4, rtol=0)
        # uncentred, the offset takes the first direction and holds most of the energy
        u, _, spectra = spectral_bases(h + shift, hp + shift, hn + shift, 0.8, 0.8)
        assert u.shape[1] == 1 and abs(float(u[:, 0] @ shift / shift.norm())) > 0.99

    def test_spectrum_owners_finds_the_mean(self):
        h, hp, hn = toy_acts()
        shift = 40.0 * torch.randn(24, generator=torch.Generator().manual_seed(3))
        own = spectrum_owners(h + shift, hp + shift, {"axis": torch.eye(24)[0]})
        assert own["first_share"] > 0.9 and own["cos_mean"] > 0.99
        assert own["first_share_centred"] < 0.5 and 0 <= own["cos_axis"] <= 1
        plain = spectrum_owners(h, hp)
        assert plain["cos_mean"] < 0.9  # without a shared offset the mean does not own it

    def test_centred_edit_is_eq4_around_the_mean(self, tiny):
        d = tiny.cfg.d_model
        h, hp, hn = toy_acts(n=200, d=d)
        m = 30.0 * torch.randn(d, generator=torch.Generator().manual_seed(1))
        acts = {"neutral": {1: h + m}, "positive": {1: hp + m}, "negative": {1: hn + m}}
        ed = SpectralEditor.fit_activations(ModelSpec.of(tiny), acts, [1], 0.8, 0.8, centre=True)
        assert ed.settings["centre"] is True and "mean.1" in ed.tensors
        z = torch.randn(2, 3, d) + m
        mean = ed.tensors["mean.1"]
        want = mean + spectral_edit(z - mean, ed.tensors["u_pos.1"], ed.tensors["u_neg.1"])
        torch.testing.assert_close(ed.hook_fn(1)(z, None), want)
        # a state at the mean is left where it is; the centred part keeps its norm (Eq. 4's rescaling)
        torch.testing.assert_close(ed.hook_fn(1)(mean[None], None), mean[None], atol=1e-4, rtol=0)
        torch.testing.assert_close((ed.hook_fn(1)(z, None) - mean).norm(dim=-1), (z - mean).norm(dim=-1))
        assert ed.cancelled_layers() == []

    def test_centred_edit_commutes_with_kv_cache_and_round_trips(self, tiny, tmp_path):
        d = tiny.cfg.d_model
        h, hp, hn = toy_acts(n=200, d=d)
        acts = {"neutral": {1: h * 5 + 2}, "positive": {1: hp * 5 + 2}, "negative": {1: hn * 5 + 2}}
        ed = SpectralEditor.fit_activations(ModelSpec.of(tiny), acts, [1], 0.9, 0.9, centre=True)
        tokens, mask = left_pad([[3, 4, 5, 6], [7, 8]], pad_id=0)
        with ed.apply(tiny):
            a = generate_tokens(tiny, tokens, mask, max_new_tokens=6, use_cache=True, stop_token_ids=[])
            b = generate_tokens(tiny, tokens, mask, max_new_tokens=6, use_cache=False, stop_token_ids=[])
        assert a == b
        loaded = Editor.load(ed.save(tmp_path / "sea"), model=tiny)
        x = torch.randint(0, 101, (1, 6))
        torch.testing.assert_close(tiny.run_with_hooks(x, fwd_hooks=loaded.fwd_hooks()),
                                   tiny.run_with_hooks(x, fwd_hooks=ed.fwd_hooks()))

    def test_paper_variant_is_unchanged_by_the_setting(self, tiny):
        """``centre=False`` (the default) is exactly the paper's Eq. 1-4."""
        d = tiny.cfg.d_model
        h, hp, hn = toy_acts(n=200, d=d)
        acts = {"neutral": {1: h}, "positive": {1: hp}, "negative": {1: hn}}
        ed = SpectralEditor.fit_activations(ModelSpec.of(tiny), acts, [1], 0.9, 0.9)
        u_pos, u_neg, _ = spectral_bases(h, hp, hn, 0.9, 0.9)
        z = torch.randn(4, d)
        torch.testing.assert_close(ed.hook_fn(1)(z, None), spectral_edit(z, u_pos, u_neg))
