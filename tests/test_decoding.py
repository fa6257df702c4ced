"""Fast decoding (``steerlens.decoding``): the same tokens and hook values as TransformerLens' exact path, the
exact path whenever a hook reads what the fused attention skips, and greedy tokens equal to ``transformers``."""

import pytest
import torch

from steerlens import decoding, generation
from steerlens.generation import encode, format_chat, generate, generate_tokens


@pytest.fixture
def fast_calls(monkeypatch):
    """How many attention forwards took the fast path (a spy around ``decoding._fast_forward``)."""
    calls = []
    real = decoding._fast_forward

    def spy(attn, *args, **kwargs):
        if isinstance(args[3] if len(args) > 3 else kwargs.get("past_kv_cache_entry"), decoding.FastKVEntry):
            calls.append(1)
        return real(attn, *args, **kwargs)

    monkeypatch.setattr(decoding, "_fast_forward", spy)
    return calls


@pytest.fixture
def exact(monkeypatch):
    """Generation forced down TransformerLens' exact path."""
    def use_exact():
        monkeypatch.setattr(generation, "fast_decoding_blocker", lambda model: "forced by the test")
    return use_exact


def left_padded(model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [3, 7, 5, 9][:n]
    width = max(lengths)
    tokens = torch.randint(1, model.cfg.d_vocab, (n, width), generator=g)
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, k in enumerate(lengths):
        mask[i, width - k:] = 1
    return tokens, mask


def recorded(model, tokens, mask, names, new=5):
    seen = {n: [] for n in names}

    def grab(act, hook):
        seen[hook.name].append(act.detach().clone())

    with model.hooks(fwd_hooks=[(n, grab) for n in names]):
        out = generate_tokens(model, tokens, mask, new, stop_token_ids=[])
    return out, seen


HOOKS = ["blocks.0.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_z", "blocks.2.hook_resid_post",
         "blocks.0.ln1.hook_normalized", "blocks.2.mlp.hook_post"]


def test_fast_and_exact_paths_agree_on_tokens_and_hook_values(tiny, exact, fast_calls):
    tokens, mask = left_padded(tiny)
    assert decoding.fast_decoding_blocker(tiny) is None
    fast, fast_seen = recorded(tiny, tokens, mask, HOOKS)
    assert len(fast_calls) == 5 * tiny.cfg.n_layers  # every layer of every step took the fast path
    exact()
    slow, slow_seen = recorded(tiny, tokens, mask, HOOKS)
    assert len(fast_calls) == 5 * tiny.cfg.n_layers  # and none of the exact run
    assert fast == slow
    for name in HOOKS:
        assert len(fast_seen[name]) == len(slow_seen[name]) >= 5  # ln1 runs once each for q, k and v
        for a, b in zip(fast_seen[name], slow_seen[name], strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_a_hook_on_the_pattern_or_the_rotated_keys_takes_the_exact_path(tiny, fast_calls):
    tokens, mask = left_padded(tiny)
    plain = generate_tokens(tiny, tokens, mask, 4, stop_token_ids=[])
    assert fast_calls
    fast_calls.clear()
    for name in ("blocks.1.attn.hook_pattern", "blocks.0.attn.hook_attn_scores", "blocks.2.attn.hook_rot_k"):
        calls = []
        with tiny.hooks(fwd_hooks=[(name, lambda act, hook, calls=calls: calls.append(act.shape))]):
            assert decoding.fast_decoding_blocker(tiny) == f"a hook reads {name}"
            assert generate_tokens(tiny, tokens, mask, 4, stop_token_ids=[]) == plain
        assert len(calls) == 4  # it fired at every step
    assert fast_calls == []
    assert decoding.fast_decoding_blocker(tiny) is None  # hooks removed: fast again


def test_hook_points_are_restored_and_a_hook_added_during_generation_fires(tiny):
    from transformer_lens.hook_points import HookPoint

    tokens, mask = left_padded(tiny)
    late = []

    def add_late(act, hook):
        if not late:
            tiny.blocks[2].hook_resid_post.add_hook(lambda a, hook: late.append(1))
        late.append(0)
        return act

    try:
        with tiny.hooks(fwd_hooks=[("blocks.0.hook_resid_post", add_late)]):
            generate_tokens(tiny, tokens, mask, 3, stop_token_ids=[])
    finally:
        tiny.reset_hooks(including_permanent=True)
    assert late.count(1) == 3
    assert all(type(m) is HookPoint for m in tiny.modules() if isinstance(m, HookPoint))
    assert all("forward" not in b.attn.__dict__ for b in tiny.blocks)


def test_an_exception_inside_generation_restores_the_model(tiny):
    from transformer_lens.hook_points import HookPoint

    tokens, mask = left_padded(tiny)

    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with tiny.hooks(fwd_hooks=[("blocks.1.hook_resid_post", boom)]):
            generate_tokens(tiny, tokens, mask, 3, stop_token_ids=[])
    assert all(type(m) is HookPoint for m in tiny.modules() if isinstance(m, HookPoint))
    assert all("forward" not in b.attn.__dict__ for b in tiny.blocks)


def test_the_fast_cache_refuses_to_overflow(tiny):
    cache = decoding.FastKVCache(tiny, batch=1, max_len=2)
    k = torch.zeros(1, 3, cache[0].keys.shape[1], tiny.cfg.d_head)
    with pytest.raises(RuntimeError, match="holds 2 positions; 3 were asked for"):
        cache[0].append(k, k)


@pytest.mark.integration
def test_shipped_editors_give_the_same_tokens_on_both_paths_and_cached_equals_uncached(model, exact):
    """The shipped prompts, greedy, every shipped method's default editor: the fast path, TransformerLens'
    exact path and uncached decoding give the same tokens."""
    from steerlens.data import data_dir, read_jsonl
    from steerlens.harness import fit_editor

    rows = read_jsonl(data_dir() / "sentiment" / "eval.jsonl")[:6]
    prompts = [r["prompt"] for r in rows if "prompt" in r][:4]
    editors = {m: fit_editor(model, m, "sentiment" if m == "recontrol" else "detox", progress=False)
               for m in ("actadd", "sea", "pace", "recontrol")}
    results = {}
    for name, editor in [("unsteered", None), *editors.items()]:
        ctx = editor.apply(model) if editor is not None else torch.no_grad()
        with ctx:
            results[name] = (generate(model, prompts, max_new_tokens=12),
                             generate(model, prompts, max_new_tokens=12, use_cache=False))
    exact()
    for name, editor in [("unsteered", None), *editors.items()]:
        ctx = editor.apply(model) if editor is not None else torch.no_grad()
        with ctx:
            slow = generate(model, prompts, max_new_tokens=12)
        fast, uncached = results[name]
        assert fast == slow, name
        assert fast == uncached, name


@pytest.mark.integration
def test_greedy_tokens_equal_transformers_generate(model):
    """Unsteered greedy decoding on the shipped evaluation prompts gives the tokens ``transformers`` gives on
    the same weights; where float32 arithmetic makes a near-tie go the other way, the first differing step's
    logits agree within 1e-3 and the two top tokens were within 0.05 of each other."""
    from steerlens.data import data_dir, read_jsonl
    from steerlens.models import load_hf_model

    hf, tok = load_hf_model(verbose=False)
    rows = read_jsonl(data_dir() / "sentiment" / "eval.jsonl")
    texts = [format_chat(tok, r["prompt"]) for r in rows if "prompt" in r][:8]
    tokens, mask = encode(model, texts)
    ours = generate_tokens(model, tokens, mask, 24, stop_token_ids=[])
    with torch.no_grad():
        theirs = hf.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=24, min_new_tokens=24,
                             do_sample=False, pad_token_id=tok.pad_token_id)[:, tokens.shape[1]:].tolist()
    differing = [i for i in range(len(texts)) if ours[i] != theirs[i]]
    for i in differing:
        step = next(j for j, (a, b) in enumerate(zip(ours[i], theirs[i], strict=True)) if a != b)
        prefix = torch.tensor([tokens[i][mask[i].bool()].tolist() + ours[i][:step]])
        with torch.no_grad():
            a = model(prefix)[0, -1]
            b = hf(prefix).logits[0, -1]
        assert (a - b).abs().max() < 1e-3
        top = b.topk(2).values
        assert top[0] - top[1] < 0.05, f"prompt {i} differs at step {step} without a near-tie"
    assert len(differing) <= 1


@pytest.mark.integration
def test_the_bridge_and_the_hooked_transformer_generate_the_same_tokens(model, bridge):
    prompts = ["Tell me about your commute.", "Name a colour.", "Why do cats purr?"]
    assert generate(bridge, prompts, max_new_tokens=12) == generate(model, prompts, max_new_tokens=12)
