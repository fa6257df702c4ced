"""Unit tests of the editing protocol on tiny random models (no real model needed)."""

import pytest
import torch

from steerlens.editing import Editor, ModelSpec, check_layers, sink_threshold
from steerlens.generation import generate_tokens, left_pad
from steerlens.methods.baselines import ActAdd, IdentityEditor, OrthoProj, orthonormal_basis, project_out
from steerlens.models import tiny_model


def make_actadd(model, layer=1, alpha=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(model.cfg.d_model, generator=g)
    return ActAdd(model=ModelSpec.of(model), layers=[layer], settings={"alpha": alpha, "position": "mean"},
                  tensors={f"vector.{layer}": v})


def n_hooks(model):
    return sum(len(hp.fwd_hooks) for hp in model.hook_dict.values())


class TestHookContract:
    def test_fwd_hooks_change_logits_and_identity_does_not(self, tiny):
        tokens = torch.randint(0, 101, (2, 7))
        base = tiny(tokens)
        steered = tiny.run_with_hooks(tokens, fwd_hooks=make_actadd(tiny).fwd_hooks())
        same = tiny.run_with_hooks(tokens, fwd_hooks=IdentityEditor.fit(tiny, [0, 1, 2]).fwd_hooks())
        assert not torch.allclose(base, steered)
        torch.testing.assert_close(base, same)

    def test_apply_removes_hooks_on_exit_and_on_exception(self, tiny):
        editor = make_actadd(tiny)
        with editor.apply(tiny):
            assert n_hooks(tiny) == 1
        assert n_hooks(tiny) == 0
        with pytest.raises(RuntimeError, match="boom"), editor.apply(tiny):
            assert n_hooks(tiny) == 1
            raise RuntimeError("boom")
        assert n_hooks(tiny) == 0

    def test_apply_refuses_mismatched_model(self, tiny):
        editor = make_actadd(tiny)
        other = tiny_model(n_layers=3, d_model=48)
        with pytest.raises(ValueError, match="d_model=32"), editor.apply(other):
            pass

    def test_sink_positions_are_left_unedited(self, tiny):
        editor = make_actadd(tiny)
        editor.tensors["sink_norm.1"] = torch.tensor(10.0)
        act = torch.randn(1, 4, 32)
        act[0, 0] *= 100  # a massive-activation position
        act = act * (5.0 / act[0, 1:].norm(dim=-1).max())
        act[0, 0] = act[0, 0] / act[0, 0].norm() * 500
        fn = editor.fwd_hooks()[0][1]
        out = fn(act, None)
        torch.testing.assert_close(out[0, 0], act[0, 0])
        assert not torch.allclose(out[0, 1:], act[0, 1:])

    def test_sink_threshold_is_factor_of_median(self):
        assert float(sink_threshold(torch.tensor([1.0, 2.0, 3.0, 1000.0]))) == 8.0  # 4 x torch's (lower) median


class TestPersistence:
    def test_save_load_round_trip(self, tiny, tmp_path):
        editor = make_actadd(tiny, alpha=0.7)
        editor.save(tmp_path / "ed")
        loaded = Editor.load(tmp_path / "ed", model=tiny)
        assert type(loaded) is ActAdd
        assert loaded.settings == editor.settings and loaded.layers == editor.layers
        torch.testing.assert_close(loaded.tensors["vector.1"], editor.tensors["vector.1"])
        tokens = torch.randint(0, 101, (1, 5))
        torch.testing.assert_close(tiny.run_with_hooks(tokens, fwd_hooks=loaded.fwd_hooks()),
                                   tiny.run_with_hooks(tokens, fwd_hooks=editor.fwd_hooks()))

    def test_load_onto_mismatched_model_is_clear_error(self, tiny, tmp_path):
        make_actadd(tiny).save(tmp_path / "ed")
        with pytest.raises(ValueError, match="Fit it again"):
            Editor.load(tmp_path / "ed", model=tiny_model(n_layers=4, d_model=32))

    def test_load_wrong_class_and_missing_path(self, tiny, tmp_path):
        make_actadd(tiny).save(tmp_path / "ed")
        with pytest.raises(ValueError, match="not 'orthoproj'"):
            OrthoProj.load(tmp_path / "ed")
        with pytest.raises(FileNotFoundError, match="No saved editor"):
            Editor.load(tmp_path / "nothing")


class TestLayersAndProjection:
    def test_check_layers(self):
        assert check_layers([-1, 0, 0], 5) == [0, 4]
        with pytest.raises(ValueError, match="out of range"):
            check_layers([5], 5)
        with pytest.raises(ValueError, match="No layers"):
            check_layers([], 5)

    def test_project_out_is_idempotent_and_orthogonal(self):
        torch.manual_seed(0)
        basis = orthonormal_basis(torch.randn(3, 16))
        assert basis.shape == (16, 3)
        torch.testing.assert_close(basis.T @ basis, torch.eye(3), atol=1e-5, rtol=0)
        h = torch.randn(5, 16)
        once = project_out(h, basis)
        torch.testing.assert_close(project_out(once, basis), once, atol=1e-5, rtol=0)
        torch.testing.assert_close(once @ basis, torch.zeros(5, 3), atol=1e-5, rtol=0)


class TestGeneration:
    def test_cached_equals_uncached_with_edit_and_left_padding(self, tiny):
        tokens, mask = left_pad([[5, 6, 7, 8], [9, 10]], pad_id=0)
        editor = make_actadd(tiny, alpha=0.5)
        with editor.apply(tiny):
            cached = generate_tokens(tiny, tokens, mask, max_new_tokens=8, use_cache=True, stop_token_ids=[])
            uncached = generate_tokens(tiny, tokens, mask, max_new_tokens=8, use_cache=False, stop_token_ids=[])
        assert cached == uncached and all(len(x) == 8 for x in cached)

    def test_left_padded_row_equals_unpadded_row(self, tiny):
        tokens, mask = left_pad([[5, 6, 7, 8], [9, 10]], pad_id=0)
        batched = generate_tokens(tiny, tokens, mask, max_new_tokens=6, stop_token_ids=[])
        t2, m2 = left_pad([[9, 10]], pad_id=0)
        alone = generate_tokens(tiny, t2, m2, max_new_tokens=6, stop_token_ids=[])
        assert batched[1] == alone[0]

    def test_stop_tokens_end_rows(self, tiny):
        tokens, mask = left_pad([[5, 6, 7]], pad_id=0)
        free = generate_tokens(tiny, tokens, mask, max_new_tokens=5, stop_token_ids=[])
        stopped = generate_tokens(tiny, tokens, mask, max_new_tokens=5, stop_token_ids=[free[0][2]])
        assert stopped[0] == free[0][:free[0].index(free[0][2])]


def test_reduced_activations_own_only_their_values():
    from steerlens.activations import reduce_positions

    act = torch.randn(4, 50, 8)
    mask = torch.ones(4, 50, dtype=torch.long)
    mask[0, :45] = 0  # a short, left-padded row
    for position in ("last", "mean"):
        r = reduce_positions(act, mask, position)
        assert r.shape == (4, 8)
        # a view of the batch would hold all 4 x 50 x 8 values while the collection runs
        assert r.untyped_storage().nbytes() == r.numel() * r.element_size()
    torch.testing.assert_close(reduce_positions(act, mask, "last"), act[:, -1])
    torch.testing.assert_close(reduce_positions(act, mask, "mean")[0], act[0, 46:].mean(0))
