"""Where the prompt ends during a forward pass: the one piece of state that generation sets and editors read.

``steerlens.generate`` declares the prompt's length (and, during KV-cached decoding, the absolute position of
the first token of each pass); an editor with ``positions="prompt"`` or ``"generated"`` asks ``position_mask``
which positions of the current pass it edits. Kept apart so that ``editing`` and ``generation`` both import it
and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

POSITIONS = ("all", "prompt", "generated")


@dataclass
class PromptSpan:
    """Where the prompt ends, for editors that edit only prompt or only generated positions.

    ``prompt_length``: positions ``< prompt_length`` are the (left-padded) prompt; ``offset``: the absolute
    position of the first position of the current forward pass (0 for a full pass, the cache length
    during KV-cached decoding). ``steerlens.generate`` keeps both up to date.
    """

    prompt_length: int
    offset: int = 0


_SPAN: ContextVar[PromptSpan | None] = ContextVar("steerlens_prompt_span", default=None)


@contextmanager
def prompt_span(prompt_length: int) -> Iterator[PromptSpan]:
    """Declare where the prompt ends for the forward passes inside the block (see ``PromptSpan``).

    ``steerlens.generate`` does this itself; use it around ``run_with_hooks`` on prompt + response
    tokens so a ``positions="generated"`` editor edits only the response.
    """
    if prompt_length < 0:
        raise ValueError(f"prompt_length must be >= 0, got {prompt_length}")
    span = PromptSpan(int(prompt_length))
    token = _SPAN.set(span)
    try:
        yield span
    finally:
        _SPAN.reset(token)


def current_span() -> PromptSpan | None:
    """The span declared by the innermost ``prompt_span`` block, or ``None`` outside one."""
    return _SPAN.get()


def position_mask(positions: str, n_pos: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[n_pos]`` bool: which positions of the current forward pass an editor with ``positions`` edits."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")
    if positions == "all":
        return torch.ones(n_pos, dtype=torch.bool, device=device)
    span = _SPAN.get()
    if span is None:
        raise RuntimeError(f"positions={positions!r} needs to know where the prompt ends: generate with "
                           "steerlens.generate, or wrap the forward pass in "
                           "`with steerlens.editing.prompt_span(prompt_length):`")
    generated = torch.arange(span.offset, span.offset + n_pos, device=device) >= span.prompt_length
    return generated if positions == "generated" else ~generated
