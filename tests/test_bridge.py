"""steerlens on TransformerBridge alone (these also run on transformer-lens 4.x: `bash .ci/run bridge4`)."""

import pytest
import torch

from steerlens import ActAdd, IdentityEditor, collect_activations, encode, generate
from steerlens.data import contrast_pairs

pytestmark = [pytest.mark.bridge, pytest.mark.integration]


def test_steerlens_hook_names_resolve(bridge):
    for name in ["blocks.0.hook_resid_post", "blocks.29.hook_resid_post", "ln_final.hook_normalized"]:
        assert name in bridge.hook_dict


def test_fit_apply_generate_on_bridge(bridge):
    pos, neg = contrast_pairs("sentiment")
    editor = ActAdd.fit(bridge, pos[:10], neg[:10], layers=[15], alpha=0.3, progress=False)
    prompt = "Tell me about your commute."
    plain = generate(bridge, prompt, max_new_tokens=10)
    with editor.apply(bridge):
        steered = generate(bridge, prompt, max_new_tokens=10)
    assert steered != plain
    assert sum(len(h.fwd_hooks) for h in bridge.hook_dict.values()) == 0
    with IdentityEditor.fit(bridge, [3, 20]).apply(bridge):
        assert generate(bridge, prompt, max_new_tokens=10) == plain


def test_collect_on_bridge_matches_run_with_cache(bridge):
    name = "blocks.5.hook_resid_post"
    acts = collect_activations(bridge, ["Dogs bark at night."], layers=[5], progress=False)[name]
    tokens, mask = encode(bridge, ["Dogs bark at night."])
    seen = {}
    bridge.run_with_hooks(tokens, attention_mask=mask,
                          fwd_hooks=[(name, lambda a, hook: seen.setdefault("a", a.detach()))])
    torch.testing.assert_close(acts[0], seen["a"][0, -1])
