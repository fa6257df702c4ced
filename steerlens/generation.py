"""Chat formatting and batched generation (greedy or sampled, KV cache on) for steered models.

The loop is ours rather than ``HookedTransformer.generate`` so that it (1) always passes an explicit
attention mask (this model's pad token is its end token ``<|im_end|>``, which TransformerLens' mask-from-
tokens rule would also hide inside chat prompts), (2) left-pads batches so the last position is always
the one producing the next token, and (3) returns only the continuations, stopping each row at its end
token. Hooks added with ``model.hooks`` / ``editor.apply`` are active during the loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from .context import prompt_span
from .decoding import FastKVCache, fast_attention, fast_decoding_blocker, no_hooks

Message = dict[str, str]


def is_bridge(model: Any) -> bool:
    return type(model).__name__ == "TransformerBridge"


def format_chat(tokenizer: Any, messages: str | Sequence[Message], system: str | None = None) -> str:
    """Render one conversation with the model's chat template, ready for the assistant's reply.

    ``messages`` is a user message (str) or a list of ``{"role", "content"}`` dicts. ``system``, if
    given, is prepended as a system message (otherwise the template's default system prompt is used).
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    messages = list(messages)
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    if not messages or any(not isinstance(m, dict) or "role" not in m or "content" not in m for m in messages):
        raise ValueError("messages must be a string or a non-empty list of {'role': ..., 'content': ...} dicts")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("This tokenizer has no chat template; pass raw text with chat=False instead")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode(
    model: Any, texts: Sequence[str]
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """Tokenise ``texts`` as they are (no special tokens added), left-padded; returns (tokens, mask)."""
    tok = model.tokenizer
    if tok is None:
        raise ValueError("This model has no tokenizer; pass token tensors instead of text")
    if len(texts) == 0:
        raise ValueError("No texts given")
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    if any(len(x) == 0 for x in ids):
        raise ValueError("Empty text: every prompt must have at least one token")
    return left_pad(ids, pad_id=tok.pad_token_id, device=_device(model))


def check_context(model: Any, lengths: Sequence[int], extra: int = 0, names: Sequence[str] | None = None) -> None:
    """Refuse texts that do not fit the model's context (``model.cfg.n_ctx`` positions) with ``extra`` more
    tokens to generate; the error names the first such text and the lengths. steerlens never truncates
    silently: shorten the text (keep its end, which the model continues), or ask for fewer new tokens."""
    n_ctx = int(model.cfg.n_ctx)
    for i, n in enumerate(lengths):
        if int(n) + extra > n_ctx:
            name = names[i] if names is not None else f"Text {i + 1}"
            plus = f" + {extra} new tokens = {int(n) + extra}" if extra else ""
            raise ValueError(f"{name} is {int(n)} tokens long{plus}, beyond the model's context of {n_ctx} "
                             f"tokens; shorten it{' or lower max_new_tokens' if extra else ''}")


def left_pad(
    ids: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    width = max(len(x) for x in ids)
    tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        if len(x):
            tokens[i, width - len(x):] = torch.as_tensor(list(x))
            mask[i, width - len(x):] = 1
    return tokens.to(device), mask.to(device)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def next_token_logits(
    model: Any,
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"],
    past_kv_cache: Any = None,
) -> Float[torch.Tensor, "batch d_vocab"]:
    """Logits of the next token only: the final norm and unembedding run on the last position.

    The unembedding is the largest matmul of a small model, so skipping it on prompt positions
    halves prefill time. Hooks on ``ln_final`` therefore see only the position that produces the
    next token, during prefill and decoding alike.
    """
    if is_bridge(model):
        if past_kv_cache is None:
            return model(tokens, attention_mask=attention_mask)[:, -1, :]
        # the HF model's own KV cache, passed through the bridge (its hooks still run on the new positions);
        # ``attention_mask`` spans the cached prefix and the new tokens
        with warnings.catch_warnings():  # transformers 5.x renames past_key_values to cache; the bridge passes it on
            warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
            logits, past_kv_cache.hf = model(tokens, attention_mask=attention_mask,
                                             past_key_values=past_kv_cache.hf, use_cache=True,
                                             return_type="logits_and_cache")
        return logits[:, -1, :]
    resid = model(tokens, attention_mask=attention_mask, past_kv_cache=past_kv_cache,
                  stop_at_layer=model.cfg.n_layers)
    return model.unembed(model.ln_final(resid[:, -1:, :]))[:, -1, :]


def bridge_kv_cache_works(model: Any) -> bool:
    """Whether cached decoding through this ``TransformerBridge`` gives the uncached logits (checked once per
    model on a 6-token probe, then remembered on the model).

    With transformer-lens 3.9 and transformers 5.x it did not: the HF decoder layers pass the cache as
    ``cache=`` and the bridge's attention reads ``past_key_values=``, so every cached step attended to itself
    alone. ``models.bridge_cache_keyword_shim`` (applied by ``load_model(backend="bridge")``) fixes that; a
    bridge where the two still disagree decodes without the cache, with a warning.
    """
    known = getattr(model, "_steerlens_kv_cache_ok", None)
    if known is not None:
        return known
    probe = torch.arange(100, 106, device=_device(model))[None]
    mask = torch.ones_like(probe)
    with torch.no_grad(), prompt_span(probe.shape[1]):
        full = next_token_logits(model, probe, mask)
        holder = _BridgeCache()
        next_token_logits(model, probe[:, :-1], mask[:, :-1], holder)
        step = next_token_logits(model, probe[:, -1:], mask, holder) if holder.hf is not None else None
    ok = step is not None and torch.allclose(step.float(), full.float(), atol=1e-2, rtol=1e-3)
    if not ok:
        warnings.warn("Cached decoding through this TransformerBridge does not reproduce uncached logits (an "
                      "incompatibility between transformer-lens and this transformers version); steerlens "
                      "generates without the KV cache on it, which is correct but slower. A HookedTransformer "
                      "(load_model(backend='hooked')) keeps its cache.", stacklevel=3)
    model._steerlens_kv_cache_ok = ok
    return ok


class _BridgeCache:
    """Holds the HF ``past_key_values`` a ``TransformerBridge`` returns, from one decoding step to the next."""

    hf: Any = None


def _sample(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float,
            generator: torch.Generator | None) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / max(temperature, 1e-6), dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_tokens(
    model: Any,
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"],
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    use_cache: bool = True,
    stop_token_ids: Sequence[int] | None = None,
    on_step: Callable[[], None] | None = None,
) -> list[list[int]]:
    """Generate from left-padded ``tokens``; returns each row's new token ids (end token excluded).
    ``on_step`` is called after each decoding step (a progress bar's update)."""
    if max_new_tokens < 0:
        raise ValueError("max_new_tokens must be >= 0")
    device = _device(model)
    tokens, attention_mask = tokens.to(device), attention_mask.to(device)
    batch = tokens.shape[0]
    if stop_token_ids is None:
        eos = getattr(model.tokenizer, "eos_token_id", None) if model.tokenizer is not None else None
        stop_token_ids = [] if eos is None else [eos]
    stop = torch.tensor(list(stop_token_ids), device=device, dtype=torch.long)
    generator = None
    if do_sample:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else torch.seed())

    cache: Any = None
    fast: Any = nullcontext()
    bridge = is_bridge(model)
    if use_cache and bridge:
        cache = _BridgeCache() if bridge_kv_cache_works(model) else None
    elif use_cache and fast_decoding_blocker(model) is None:  # preallocated rotated keys, fused attention
        cache = FastKVCache(model, batch, tokens.shape[1] + max_new_tokens)
        fast = fast_attention(model)
    elif use_cache:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, batch)

    out: list[list[int]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    step_tokens, step_mask = tokens, attention_mask
    full_tokens, full_mask = tokens, attention_mask
    # with no hook anywhere nothing can need autograd: inference mode skips its bookkeeping
    grad_mode = torch.inference_mode() if no_hooks(model) else nullcontext()
    with prompt_span(tokens.shape[1]) as span, fast, grad_mode:
        for _ in range(max_new_tokens):
            span.offset = full_tokens.shape[1] - step_tokens.shape[1] if cache is not None else 0
            if cache is None:
                logits = next_token_logits(model, full_tokens, full_mask)
            else:  # TransformerLens' cache keeps its own mask; the HF cache under a bridge needs the whole one
                logits = next_token_logits(model, step_tokens, full_mask if bridge else step_mask, cache)
            nxt = _sample(logits, do_sample, temperature, top_p, generator)
            if on_step is not None:
                on_step()
            finished_now = torch.isin(nxt, stop) if len(stop) else torch.zeros_like(done)
            for i, (token, was_done, ends) in enumerate(zip(nxt.tolist(), done.tolist(), finished_now.tolist(),
                                                           strict=True)):
                if not was_done and not ends:
                    out[i].append(token)
            done |= finished_now
            if bool(done.all()):
                break
            step_tokens = nxt[:, None]
            step_mask = torch.ones((batch, 1), dtype=attention_mask.dtype, device=device)
            full_tokens = torch.cat([full_tokens, step_tokens], dim=1)
            full_mask = torch.cat([full_mask, step_mask], dim=1)
    return out


def generate(
    model: Any,
    prompts: str | Sequence[str] | Sequence[Sequence[Message]],
    max_new_tokens: int = 64,
    chat: bool = True,
    system: str | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    use_cache: bool = True,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "generating",
) -> list[str]:
    """Generate continuations for prompts, batched; returns the decoded new text only.

    Args:
        prompts: user messages (``chat=True``, formatted with the chat template), raw text to continue
            (``chat=False``), or conversations as lists of ``{"role", "content"}`` dicts.
        system: optional system prompt (chat only).
        do_sample, temperature, top_p, seed: greedy by default; sampling is seeded when ``seed`` is set.
        progress, desc: a progress bar (decoding steps of every batch), labelled ``desc``.

    Example:
        >>> with editor.apply(model):
        ...     steered = generate(model, ["Tell me about your day."], max_new_tokens=30)
    """
    single = isinstance(prompts, str)
    items = [prompts] if single else list(prompts)
    if not items:
        raise ValueError("No prompts given")
    texts = [format_chat(model.tokenizer, p, system) if chat else _as_text(p) for p in items]
    outs: list[str] = []
    starts = range(0, len(texts), batch_size)
    with tqdm(total=len(starts) * max_new_tokens, desc=desc, disable=not progress, unit="step",
              leave=False) as bar:
        for start in starts:
            tokens, mask = encode(model, texts[start:start + batch_size])
            check_context(model, mask.sum(-1).tolist(), max_new_tokens,
                          [f"Prompt {start + i + 1}" for i in range(tokens.shape[0])])
            seed_i = None if seed is None else seed + start
            ids = generate_tokens(model, tokens, mask, max_new_tokens, do_sample, temperature, top_p, seed_i,
                                  use_cache, on_step=lambda: bar.update(1))
            bar.update(max_new_tokens * (start // batch_size + 1) - bar.n)  # rows that stopped early
            outs.extend(model.tokenizer.decode(x, skip_special_tokens=True) for x in ids)
    return outs[0:1] if single else outs


def _as_text(p: Any) -> str:
    if not isinstance(p, str):
        raise ValueError("With chat=False each prompt must be a string of raw text")
    return p
