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


def test_bridge_generation_cached_matches_uncached(bridge):
    """steerlens.generate on a bridge uses the KV cache only where cached decoding reproduces the uncached
    logits (``bridge_kv_cache_works``); either way cached and uncached calls give the same tokens, batched and
    left-padded, with and without an editor."""
    import warnings

    from steerlens.generation import _BridgeCache, bridge_kv_cache_works, next_token_logits

    prompts = ["Tell me about your commute.", "Name a colour."]
    pos, neg = contrast_pairs("sentiment")
    editor = ActAdd.fit(bridge, pos[:10], neg[:10], layers=[15], alpha=0.3, progress=False)
    for steer in (False, True):
        ctx = editor.apply(bridge) if steer else IdentityEditor.fit(bridge, [0]).apply(bridge)
        with ctx, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cached = generate(bridge, prompts, max_new_tokens=8, use_cache=True)
            uncached = generate(bridge, prompts, max_new_tokens=8, use_cache=False)
        assert cached == uncached, steer
    # the probe's verdict is the truth about this bridge: one cached step against the full pass
    tokens, mask = encode(bridge, ["The cat sat on the mat today"])
    with torch.no_grad():
        full = next_token_logits(bridge, tokens, mask)
        holder = _BridgeCache()
        next_token_logits(bridge, tokens[:, :-1], mask[:, :-1], holder)
        step = next_token_logits(bridge, tokens[:, -1:], mask, holder)
    assert bridge_kv_cache_works(bridge) == torch.allclose(step, full, atol=1e-2, rtol=1e-3)


def test_the_bridge_decodes_with_its_kv_cache(bridge):
    """With ``models.bridge_cache_keyword_shim`` the bridge's cached decoding reproduces the uncached logits,
    so ``steerlens.generate`` keeps the cache on it (before the shim it decoded without it, 13x slower)."""
    from steerlens.generation import bridge_kv_cache_works

    assert bridge_kv_cache_works(bridge)
