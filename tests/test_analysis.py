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
