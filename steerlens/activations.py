"""Collect activations at hook points for many texts: batched, left-padded, with a progress bar.

The forward pass stops after the last block that any requested hook needs (``stop_at_layer``), so
collecting layer 5 of a 30-layer model costs about a fifth of a full pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from .editing import resid_hook_name
from .generation import check_context, encode, format_chat

Position = Literal["last", "mean", "all"]
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def rms_normalise(x: Float[torch.Tensor, "... d"], eps: float = 1e-5) -> Float[torch.Tensor, "... d"]:
    """``x / rms(x)`` over the last axis, as an RMS norm does before its gain: the lens readings use it to
    put a residual stream on the final state's scale."""
    return x / x.pow(2).mean(-1, keepdim=True).add(eps).sqrt()


def _stop_layer(names: Sequence[str], n_layers: int) -> int | None:
    layers = []
    for name in names:
        m = _BLOCK.match(name)
        if m is None:
            return None  # e.g. ln_final: needs the whole pass
        layers.append(int(m.group(1)))
    # the last block's output too: the pass stops before the unembedding (a fifth of a small model's cost)
    return min(max(layers) + 1, n_layers)


def hook_names_for(model: Any, layers: Sequence[int] | None = None, hook_names: Sequence[str] | None = None
                   ) -> list[str]:
    """Resolve layers (residual stream after each block) and/or explicit hook names, checking they exist."""
    names = list(hook_names or [])
    n_layers = model.cfg.n_layers
    for layer in layers or []:
        idx = layer + n_layers if layer < 0 else layer
        if not 0 <= idx < n_layers:
            raise ValueError(f"Layer {layer} out of range for a model with {n_layers} layers")
        names.append(resid_hook_name(idx))
    if not names:
        raise ValueError("Give layers=[...] or hook_names=[...]")
    known = set(model.hook_dict)  # on TransformerBridge this includes TransformerLens aliases
    for name in names:
        if name not in known:
            close = sorted(k for k in known if k.endswith(name.split(".")[-1]))[:5]
            raise ValueError(f"Unknown hook name {name!r} for this model. Similar names: {close}. "
                             "List them all with sorted(model.hook_dict).")
    return names


def reduce_positions(act: Float[torch.Tensor, "b pos d"], mask: torch.Tensor, position: Position
                     ) -> Float[torch.Tensor, "b d"]:
    """One batch's activations (left-padded; ``mask`` 1 on real tokens) at the ``"last"`` token or as the
    ``"mean"`` over real tokens but the first, as a CPU tensor that owns only its own values: a slice kept
    as a view would keep the whole batch alive (on a CPU run, memory grows by the sequence length)."""
    if position == "last":
        return act[:, -1, :].cpu().clone()  # left padding: the last position is real
    # The first real token holds the attention sink's massive activation (norm ~100x the others in
    # SmolLM2), which would dominate a mean: leave it out when there are others.
    m = mask.to(act.dtype).clone()
    first = m.argmax(dim=1)
    multi = m.sum(1) > 1
    m[torch.arange(m.shape[0], device=m.device)[multi], first[multi]] = 0
    m = m[:, :, None]
    return ((act * m).sum(1) / m.sum(1)).cpu()


@torch.no_grad()
def collect_activations(
    model: Any,
    texts: Sequence[str] | Sequence[Sequence[dict[str, str]]],
    layers: Sequence[int] | None = None,
    hook_names: Sequence[str] | None = None,
    position: Position = "last",
    chat: bool = False,
    system: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Float[torch.Tensor, "n d_model"] | list[Float[torch.Tensor, "pos d_model"]]]:
    """Activations of ``texts`` at the residual stream after ``layers`` (and/or at ``hook_names``).

    Args:
        texts: raw strings, or chat messages when ``chat=True`` (formatted with the model's template,
            ending with the assistant prompt).
        position: ``"last"`` (last real token), ``"mean"`` (mean over real tokens but the first,
            which holds the attention sink) or ``"all"
            (a list with one ``[pos, d_model]`` tensor per text, padding removed).

    Returns:
        ``{hook_name: tensor [n, d_model]}`` (float32, CPU) for ``last`` / ``mean``; lists for ``all``.
    """
    if position not in ("last", "mean", "all"):
        raise ValueError(f"position must be 'last', 'mean' or 'all', not {position!r}")
    if len(texts) == 0:
        raise ValueError("No texts given: pass at least one text")
    names = hook_names_for(model, layers, hook_names)
    stop = _stop_layer(names, model.cfg.n_layers)
    strs = [format_chat(model.tokenizer, t, system) if chat else t for t in texts]
    if not all(isinstance(s, str) for s in strs):
        raise ValueError("texts must be strings (or chat messages with chat=True)")

    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    # Batches of similar length waste little on padding; the results are put back in the given order.
    order = sorted(range(len(strs)), key=lambda i: len(strs[i]))
    starts = range(0, len(strs), batch_size)
    for start in tqdm(starts, desc="activations", disable=not progress, unit="batch", leave=False):
        tokens, mask = encode(model, [strs[i] for i in order[start:start + batch_size]])
        check_context(model, mask.sum(-1).tolist(), 0, [f"Text {i + 1}" for i in order[start:start + batch_size]])
        store: dict[str, torch.Tensor] = {}

        def grab(name: str, store: dict[str, torch.Tensor] = store) -> Any:
            # Keyed by the requested name: on the bridge, hook.name is the bridge's own alias target.
            def fn(value: torch.Tensor, hook: Any) -> None:
                store[name] = value.detach()
            return fn

        model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[(n, grab(n)) for n in names],
                             stop_at_layer=stop)
        for name in names:
            act = store[name].float()
            if position == "all":
                out[name].extend(act[i, mask[i].bool()].cpu() for i in range(act.shape[0]))
            else:
                out[name].append(reduce_positions(act, mask.to(act.device), position))
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))
    if position == "all":
        return {n: [v[i] for i in back.tolist()] for n, v in out.items()}  # type: ignore[misc]
    return {n: torch.cat(v)[back] for n, v in out.items()}
