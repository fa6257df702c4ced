"""The editing protocol every steerlens method implements.

An editor is a fitted object that produces TransformerLens forward hooks: a list of
``(hook_name, fn)`` pairs where ``fn(act, hook)`` is a plain hook function. Nothing more exotic:
the pairs work with ``model.run_with_hooks(tokens, fwd_hooks=editor.fwd_hooks())``,
``model.hooks(fwd_hooks=...)`` and ``model.add_hook``. On top of that every editor offers

- ``editor.apply(model)``: a context manager that checks the model matches the editor, adds the
  hooks, and always removes them (on exit and on exceptions);
- ``editor.save(path)`` / ``Editor.load(path, model=...)``: a folder with ``tensors.safetensors``
  and ``editor.json`` (method, settings, and the model it was fitted on: name, d_model, n_layers).

Methods register themselves by name in ``REGISTRY`` so the CLI and ``load`` can find them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file, save_file

HookFn = Callable[[torch.Tensor, Any], torch.Tensor | None]
FwdHooks = list[tuple[str, HookFn]]

REGISTRY: dict[str, type[Editor]] = {}
E = TypeVar("E", bound="Editor")

FORMAT_VERSION = 1


def register(cls: type[E]) -> type[E]:
    """Class decorator: make an editor class loadable and usable from the CLI by its ``method`` name."""
    REGISTRY[cls.method] = cls
    return cls


def resid_hook_name(layer: int) -> str:
    """The residual-stream hook after block ``layer``; valid on HookedTransformer and TransformerBridge."""
    return f"blocks.{layer}.hook_resid_post"


@dataclass
class ModelSpec:
    """What an editor needs to know about the model it was fitted on, to refuse a mismatched one."""

    name: str
    d_model: int
    n_layers: int

    @classmethod
    def of(cls, model: Any) -> ModelSpec:
        cfg = model.cfg
        return cls(name=str(getattr(cfg, "model_name", "unknown")), d_model=int(cfg.d_model),
                   n_layers=int(cfg.n_layers))

    def check(self, model: Any, what: str = "editor") -> None:
        """Raise ``ValueError`` saying what to do if ``model`` is not shaped like the fitted one."""
        other = ModelSpec.of(model)
        if (other.d_model, other.n_layers) != (self.d_model, self.n_layers):
            raise ValueError(
                f"This {what} was fitted on {self.name!r} (d_model={self.d_model}, n_layers={self.n_layers}) "
                f"but the model given is {other.name!r} (d_model={other.d_model}, "
                f"n_layers={other.n_layers}). Fit it again on this model, or load the model it was fitted on."
            )


@dataclass
class Editor:
    """Base class of all editors. Subclasses set ``method`` and implement ``hook_fn``.

    Subclasses keep their learned tensors in ``tensors`` (name -> tensor, saved with safetensors) and
    their JSON-able settings in ``settings``; everything else must be derivable from those two.
    """

    method: ClassVar[str] = "base"

    model: ModelSpec
    layers: list[int]
    settings: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    # -- the hook contract ------------------------------------------------------------------------
    def hook_name(self, layer: int) -> str:
        """Where the edit for ``layer`` is applied. Default: the residual stream after the block."""
        return resid_hook_name(layer)

    def hook_fn(self, layer: int) -> HookFn:  # pragma: no cover - abstract
        raise NotImplementedError

    def fwd_hooks(self) -> FwdHooks:
        """The ``[(hook_name, fn)]`` list to pass to ``run_with_hooks`` / ``model.hooks``."""
        return [(self.hook_name(layer), self._protect_sink(layer, self.hook_fn(layer))) for layer in self.layers]

    def _protect_sink(self, layer: int, fn: HookFn) -> HookFn:
        """Leave attention-sink positions unedited.

        Small LMs park a massive activation on their first token (Sun et al. 2024, "Massive
        activations"); in SmolLM2 its norm is ~100x the others'. Editing it wrecks every later
        position, so positions whose norm exceeds the fitted ``sink_norm.{layer}`` keep their value.
        The rule depends on each token vector alone, so cached and uncached generation agree.
        """
        threshold = self.tensors.get(f"sink_norm.{layer}")
        if threshold is None:
            return fn

        def guarded(act: torch.Tensor, hook: Any) -> torch.Tensor:
            edited = fn(act, hook)
            if edited is None:
                return act
            sink = act.norm(dim=-1, keepdim=True) > threshold.to(act.dtype)
            return torch.where(sink, act, edited)

        return guarded

    @contextmanager
    def apply(self, model: Any) -> Iterator[Any]:
        """Context manager: ``with editor.apply(model): model.generate(...)``. Hooks never leak."""
        self.model.check(model, f"{self.method} editor")
        self.to(next(model.parameters()).device)
        with model.hooks(fwd_hooks=self.fwd_hooks()):
            yield model

    def to(self, device: torch.device | str) -> Editor:
        for k, v in self.tensors.items():
            if v.device != torch.device(device):
                self.tensors[k] = v.to(device)
        return self

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path/editor.json`` and ``path/tensors.safetensors``; returns ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "model": vars(self.model),
            "layers": list(self.layers),
            "settings": self.settings,
        }
        (path / "editor.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        save_file(tensors, str(path / "tensors.safetensors"))
        return path

    @classmethod
    def load(cls, path: str | Path, model: Any | None = None) -> Editor:
        """Load an editor saved by ``save``. With ``model`` given, refuse a mismatched model.

        Called on ``Editor`` it returns the registered subclass named in the file; called on a
        subclass it also checks the file holds that method.
        """
        path = Path(path)
        meta_path = path / "editor.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"No saved editor at {path} (expected {meta_path}); save one with editor.save()")
        meta = json.loads(meta_path.read_text())
        method = meta.get("method")
        if method not in REGISTRY:
            raise ValueError(f"{meta_path} names method {method!r}; known methods: {sorted(REGISTRY)}")
        klass = REGISTRY[method]
        if cls is not Editor and klass is not cls:
            raise ValueError(f"{meta_path} holds a {method!r} editor, not {cls.method!r}; use Editor.load")
        tensors = load_file(str(path / "tensors.safetensors"))
        editor = klass(model=ModelSpec(**meta["model"]), layers=[int(x) for x in meta["layers"]],
                       settings=meta["settings"], tensors=tensors)
        if model is not None:
            editor.model.check(model, f"saved {method} editor")
            editor.to(next(model.parameters()).device)
        return editor


# -- prompt vs generated positions -------------------------------------------------------------------------
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
POSITIONS = ("all", "prompt", "generated")


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


SINK_FACTOR = 4.0


def sink_threshold(token_norms: torch.Tensor) -> torch.Tensor:
    """Norm above which a position counts as an attention sink: ``SINK_FACTOR`` x the median token norm."""
    return (token_norms.float().median() * SINK_FACTOR).reshape(())


def check_layers(layers: list[int], n_layers: int) -> list[int]:
    """Validate and normalise layer indices (negative counts from the end), with a helpful error."""
    if len(layers) == 0:
        raise ValueError("No layers given: pass at least one layer index, e.g. layers=[-1]")
    out = []
    for layer in layers:
        idx = layer + n_layers if layer < 0 else layer
        if not 0 <= idx < n_layers:
            raise ValueError(f"Layer {layer} is out of range for a model with {n_layers} layers "
                             f"(valid: 0..{n_layers - 1}, or negative from the end)")
        out.append(int(idx))
    return sorted(set(out))


def check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or inf values; check the inputs (and the model dtype)")


@torch.no_grad()
def edit_magnitudes(model: Any, editor: Editor, text: str | torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Relative size of the edit, ``||edit(z) - z|| / ||z||``, per edited layer (rows) and token (columns).

    Runs ``text`` (tokenised as is, or a ``[1, pos]`` token tensor) once with the editor's hooks, each
    wrapped to record its change; the recorded edits compound layer to layer exactly as during
    generation. Returns (sizes, token labels).
    """
    from .generation import encode

    editor.model.check(model)
    if isinstance(text, torch.Tensor):
        tokens, mask = text.reshape(1, -1), torch.ones_like(text.reshape(1, -1))
    else:
        tokens, mask = encode(model, [text])
    sizes: dict[str, torch.Tensor] = {}

    def recording(name: str, fn: HookFn) -> HookFn:
        def wrapped(act: torch.Tensor, hook: Any) -> torch.Tensor:
            out = fn(act, hook)
            out = act if out is None else out
            sizes[name] = ((out - act).norm(dim=-1) / act.norm(dim=-1).clamp_min(1e-12))[0].cpu()
            return out
        return wrapped

    hooks = [(name, recording(name, fn)) for name, fn in editor.fwd_hooks()]
    model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks)
    tok = model.tokenizer
    labels = [tok.decode([t]) if tok is not None else str(t) for t in tokens[0].tolist()]
    return torch.stack([sizes[name] for name, _ in hooks]), labels
