"""Fast cached decoding on a ``HookedTransformer``: what makes ``steerlens.generate`` as fast as ``transformers``.

TransformerLens' attention keeps unrotated keys in a cache that grows by concatenation, rotates every cached
key again at every step, expands the grouped keys and values to every head, and builds the scores and the
pattern explicitly. During ``steerlens.generate`` each attention layer instead

- keeps its keys already rotated, in buffers allocated once for the whole generation (no concatenation);
- rotates only the new queries and keys (TransformerLens' own ``apply_rotary``, same positions);
- attends with torch's fused ``scaled_dot_product_attention`` (grouped heads without expansion).

Everything else is TransformerLens' own code: the embeddings, norms, MLPs and every hook point outside the
attention pattern fire with the same values (``hook_q``, ``hook_k``, ``hook_v`` and ``hook_z`` included). The
fused kernel never forms the rotated keys of the whole prefix, the scores or the pattern, so the fast path is
used only while no hook is attached to ``hook_rot_q``, ``hook_rot_k``, ``hook_attn_scores`` or
``hook_pattern`` (a hook added there, e.g. by ``run_with_cache``, sends generation down TransformerLens' exact
path), and only for the attention variants it implements (``fast_decoding_blocker`` says why not otherwise).
``tests/test_decoding.py`` checks both paths give the same tokens and hook values.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import einops
import torch
import torch.nn.functional as F

# the attention hook points the fused kernel skips (it never forms these tensors)
SKIPPED_HOOKS = ("hook_rot_q", "hook_rot_k", "hook_attn_scores", "hook_pattern")
_ATTENTION = ("Attention", "GroupedQueryAttention")


def _hooked(module: Any) -> bool:
    return bool(module is not None and (module._forward_hooks or module._forward_pre_hooks
                                        or module._backward_hooks))


def fast_decoding_blocker(model: Any) -> str | None:
    """Why the fast path cannot run on ``model`` now (``None``: it can)."""
    cfg = getattr(model, "cfg", None)
    blocks = getattr(model, "blocks", None)
    if cfg is None or blocks is None or type(model).__name__ != "HookedTransformer":
        return "not a HookedTransformer"
    checks = {
        "rotary positions": cfg.positional_embedding_type == "rotary",
        "causal attention": cfg.attention_dir == "causal",
        "no per-head attention results": not cfg.use_attn_result,
        "no split attention inputs": not (cfg.use_split_qkv_input or cfg.use_attn_in),
        "no score soft-cap": not (cfg.attn_scores_soft_cap and cfg.attn_scores_soft_cap > 0),
        "no attention sinks, log-n scaling, dynamic NTK or QKV clipping":
            not (getattr(cfg, "use_attention_sinks", False) or getattr(cfg, "use_logn_attn", False)
                 or getattr(cfg, "use_dynamic_ntk_rope", False) or getattr(cfg, "clip_qkv", None) is not None),
        "global attention": not any(t == "local" for t in (cfg.attn_types or [])),
        "unquantised weights": not getattr(cfg, "load_in_4bit", False),
        "one device": getattr(cfg, "n_devices", 1) == 1,
        "no OLMo QK-norm": cfg.original_architecture not in ("OlmoeForCausalLM", "Olmo2ForCausalLM",
                                                             "Olmo3ForCausalLM"),
    }
    for what, ok in checks.items():
        if not ok:
            return f"needs {what}"
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if type(attn).__name__ not in _ATTENTION or getattr(attn, "attn_type", "global") == "local":
            return f"block {i}'s attention is {type(attn).__name__}"
        for name in SKIPPED_HOOKS:
            if _hooked(getattr(attn, name, None)):
                return f"a hook reads blocks.{i}.attn.{name}"
    return None


def no_hooks(model: Any) -> bool:
    """Whether no hook is attached anywhere in ``model`` (then generation can run in ``torch.inference_mode``;
    a hook may need autograd, as RE-Control's ascent does)."""
    return not any(_hooked(m) for m in model.modules())


class FastKVEntry:
    """One layer's cache: rotated keys and values in buffers ``[batch, kv_heads, max_len, d_head]`` allocated
    once; ``past_keys`` shows the filled part as TransformerLens lays it out (``[batch, pos, heads, d_head]``)."""

    frozen = False

    def __init__(self, batch: int, heads: int, d_head: int, max_len: int, device: Any, dtype: torch.dtype,
                 cache: FastKVCache | None = None):
        self.keys = torch.empty(batch, heads, max_len, d_head, device=device, dtype=dtype)
        self.values = torch.empty_like(self.keys)
        self.length = 0
        self.cache = cache  # the whole cache: what every layer of a step shares

    @property
    def past_keys(self) -> torch.Tensor:
        return self.keys[:, :, :self.length].transpose(1, 2)

    @property
    def past_values(self) -> torch.Tensor:
        return self.values[:, :, :self.length].transpose(1, 2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``, ``v`` ``[batch, new, heads, d_head]``; returns all keys and values ``[batch, heads, len,
        d_head]``."""
        n = k.shape[1]
        end = self.length + n
        if end > self.keys.shape[2]:
            raise RuntimeError(f"The fast KV cache holds {self.keys.shape[2]} positions; {end} were asked for")
        self.keys[:, :, self.length:end] = k.transpose(1, 2)
        self.values[:, :, self.length:end] = v.transpose(1, 2)
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class FastKVCache:
    """The cache ``HookedTransformer.forward`` is given during fast decoding (its interface: ``[i]``,
    ``append_attention_mask``, ``frozen``), with the attention mask kept in a preallocated buffer too."""

    frozen = False

    def __init__(self, model: Any, batch: int, max_len: int):
        cfg = model.cfg
        device = next(model.parameters()).device
        heads = cfg.n_key_value_heads or cfg.n_heads
        self.tables = _shared_tables(model)
        self.step: dict = {}  # what every layer of the current step reuses: the mask, the rotary angles
        self.entries = [FastKVEntry(batch, heads, cfg.d_head, max_len, device, cfg.dtype, self)
                        for _ in range(cfg.n_layers)]
        self.mask = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.length = 0

    def __getitem__(self, i: int) -> FastKVEntry:
        return self.entries[i]

    @property
    def previous_attention_mask(self) -> torch.Tensor:
        return self.mask[:, :self.length]

    def append_attention_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        self.step.clear()  # a new step
        n = attention_mask.shape[1]
        self.mask[:, self.length:self.length + n] = attention_mask
        self.length += n
        return self.mask[:, :self.length]


def _fast_forward(attn: Any, query_input: torch.Tensor, key_input: torch.Tensor, value_input: torch.Tensor,
                  past_kv_cache_entry: Any = None, additive_attention_mask: torch.Tensor | None = None,
                  attention_mask: torch.Tensor | None = None, position_bias: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """The attention of one layer with a ``FastKVEntry`` (see the module docstring); any other call goes to
    TransformerLens' own forward."""
    if not isinstance(past_kv_cache_entry, FastKVEntry) or additive_attention_mask is not None \
            or position_bias is not None or attention_mask is None:
        return type(attn).forward(attn, query_input, key_input, value_input, past_kv_cache_entry,
                                  additive_attention_mask, attention_mask, position_bias)
    q, k, v = attn.calculate_qkv_matrices(query_input, key_input, value_input)  # hook_q, hook_k, hook_v fire
    entry = past_kv_cache_entry
    offset = entry.length
    step = entry.cache.step if entry.cache is not None else {}
    tables = entry.cache.tables if entry.cache is not None else {}
    q = _rotary(attn, q, offset, attention_mask, step, tables)
    k = _rotary(attn, k, offset, attention_mask, step, tables)  # the new keys only
    keys, values = entry.append(k, v)
    batch, n, heads, d_head = q.shape
    if "mask" not in step:
        step["mask"] = _step_mask(attention_mask, offset, n, keys.shape[2])
    allowed, real = step["mask"]
    z = F.scaled_dot_product_attention(q.transpose(1, 2), keys.to(q.dtype), values.to(q.dtype),
                                       attn_mask=allowed, scale=1.0 / float(attn.attn_scale),
                                       enable_gqa=keys.shape[1] != heads)
    z = z.transpose(1, 2) * real.to(z.dtype)
    z = attn.hook_z(z)  # [batch, pos, head_index, d_head]
    w = einops.rearrange(attn.W_O, "head_index d_head d_model -> d_model (head_index d_head)")
    return F.linear(z.reshape(batch, n, heads * d_head).to(w.dtype), w, attn.b_O)


def _step_mask(attention_mask: torch.Tensor, offset: int, n: int, length: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(``allowed`` [batch, 1, n, length]: causal and not padding, ``real`` [batch, n, 1, 1]: which queries are
    tokens) for ``n`` new positions after ``offset``; the same at every layer of a step, so made once."""
    device = attention_mask.device
    key_ok = attention_mask[:, :length].bool()
    query_pos = torch.arange(offset, offset + n, device=device)
    key_pos = torch.arange(length, device=device)
    allowed = (key_pos[None, :] <= query_pos[:, None])[None] & key_ok[:, None, :]
    real = key_ok[:, offset:offset + n]  # padded queries attend to nothing in TransformerLens: z = 0 there
    # a padded query may attend to itself (its row is then not empty, so no NaN); its z is zeroed by ``real``
    allowed = allowed | (~real[:, :, None] & (key_pos[None, None, :] == query_pos[None, :, None]))
    return allowed[:, None], real[:, :, None, None]


def _shared_tables(model: Any) -> dict[int, int]:
    """``id(table) -> id(first equal table)`` for the layers' rotary cos and sin tables (each layer holds its own
    copy; equal copies share one lookup of the step's angles)."""
    out: dict[int, int] = {}
    seen: list[torch.Tensor] = []
    for block in model.blocks:
        for table in (block.attn.rotary_cos, block.attn.rotary_sin):
            same = next((t for t in seen if t.shape == table.shape and t.dtype == table.dtype
                         and torch.equal(t, table)), None)
            if same is None:
                seen.append(table)
                same = table
            out[id(table)] = id(same)
    return out


def _rotary(attn: Any, x: torch.Tensor, offset: int, attention_mask: torch.Tensor, step: dict,
            tables: dict[int, int]) -> torch.Tensor:
    """TransformerLens' ``apply_rotary(x, offset, attention_mask)`` (same positions, same arithmetic), with the
    angles of this step looked up once and shared by every layer."""
    n, rd = x.shape[1], attn.cfg.rotary_dim
    table = attn.rotary_cos
    if (offset + n > table.shape[0] or x.device != table.device or attn.cfg.rotary_adjacent_pairs
            or getattr(attn.cfg, "use_dynamic_ntk_rope", False)):
        return attn.apply_rotary(x, offset, attention_mask)
    key = (tables.get(id(table), id(table)), tables.get(id(attn.rotary_sin), id(attn.rotary_sin)))
    if key not in step:
        from transformer_lens.utilities.tensors import get_offset_position_ids

        ids = get_offset_position_ids(offset, attention_mask).to(table.device)
        step[key] = (table[ids, None, :], attn.rotary_sin[ids, None, :])
    cos, sin = step[key]
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    half = rd // 2
    flip = torch.cat([-x_rot[..., half:], x_rot[..., :half]], dim=-1)  # rotate_every_two, GPT-NeoX pairs
    out = x_rot * cos + flip * sin
    return out if x_pass.shape[-1] == 0 else torch.cat([out, x_pass], dim=-1)


@contextmanager
def fast_attention(model: Any) -> Iterator[None]:
    """Inside the block: every attention layer's forward goes through ``_fast_forward`` (calls without a
    ``FastKVEntry`` still take TransformerLens' path), and hook points that hold no hook are called without
    ``nn.Module``'s call machinery (``_BareHookPoint``: the output of a hook point with no hook is its input; one
    that gets a hook meanwhile runs it as usual). Restored on exit, exceptions included."""
    from transformer_lens.hook_points import HookPoint

    patched, bare = [], []
    try:
        for block in model.blocks:
            attn = block.attn
            if "forward" not in attn.__dict__:
                attn.forward = types.MethodType(_fast_forward, attn)
                patched.append(attn)
        for module in model.modules():
            if type(module) is HookPoint and not _hooked(module):
                module.__class__ = _bare_class(HookPoint)
                bare.append(module)
        yield
    finally:
        for attn in patched:
            attn.__dict__.pop("forward", None)
        for module in bare:
            module.__class__ = module.__class__.__bases__[0]


_BARE: dict[type, type] = {}


def _bare_class(hook_point: type) -> type:
    """A subclass of TransformerLens' ``HookPoint`` whose call returns its input unless a hook was attached."""
    if hook_point not in _BARE:
        def __call__(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
            if self._forward_hooks or self._forward_pre_hooks:
                return hook_point.__call__(self, x, *args, **kwargs)
            return x

        _BARE[hook_point] = type("_BareHookPoint", (hook_point,), {"__call__": __call__})
    return _BARE[hook_point]
