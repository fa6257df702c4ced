"""Baselines every comparison needs: identity, ActAdd / mean-difference addition, orthogonal
projection (directional ablation), and prompting. Same protocol and persistence as the methods.

- ActAdd / CAA (Turner et al. 2023; Rimsky et al. 2024): ``h <- h + alpha * (mean(H+) - mean(H-))``.
- OrthoProj / directional ablation (Arditi et al. 2024): ``h <- h - U U^T h`` with ``U`` an orthonormal
  basis of the undesirable direction(s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float

from ..activations import collect_activations
from ..editing import (
    Editor,
    HookFn,
    ModelSpec,
    TensorSpec,
    check_finite,
    check_layers,
    checked_settings,
    register,
    resid_hook_name,
    sink_threshold,
)
from ..settings import Setting

LAYERS_HELP = "the layers whose residual stream is edited (blocks.L.hook_resid_post)"
# how the contrast texts are read (the task decides: the last token for TruthfulQA's answers, else the mean)
POSITION = Setting("position", "str", "mean", "where each contrast text is read", choices=("mean", "last"),
                   recipe=False)
SINK_NORM = TensorSpec("sink_norm.{L}", (), optional=True)


@register
class IdentityEditor(Editor):
    """Hooks that return the activation unchanged: the unsteered model, with the hook overhead."""

    method = "none"
    settings_spec = ()
    tensor_spec = ()

    @classmethod
    def fit(cls, model: Any, layers: Sequence[int] = (-1,)) -> IdentityEditor:
        return cls(model=ModelSpec.of(model), layers=check_layers(list(layers), model.cfg.n_layers))

    @classmethod
    def for_task(cls, model: Any, task: Any, settings: dict[str, Any]) -> IdentityEditor:
        """Every layer, unchanged: the unsteered model with the hooks' overhead."""
        return cls.fit(model, layers=list(range(model.cfg.n_layers)))

    def hook_fn(self, layer: int) -> HookFn:
        def identity(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return act
        return identity


def mean_difference(
    pos: Float[torch.Tensor, "n d"], neg: Float[torch.Tensor, "m d"]
) -> Float[torch.Tensor, " d"]:
    """``mean(pos) - mean(neg)``: the steering vector of ActAdd / CAA."""
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise ValueError("Need at least one positive and one negative example")
    return pos.double().mean(0).sub(neg.double().mean(0)).float()


@register
class ActAdd(Editor):
    """Add ``alpha * (mean(H+) - mean(H-))`` to the residual stream at every position of each layer.

    The stored vector is the unit mean-difference direction times the mean activation norm at that
    layer, so ``settings["alpha"]`` is a fraction of a typical activation and comparable across layers.
    """

    method = "actadd"
    # 1: contrast pairs that share no first word no longer lend the positive's first word to the negative
    recipe_revision = 1
    settings_spec = (
        Setting("layers", "layers", [15], LAYERS_HELP, saved=False),
        Setting("alpha", "float", 0.3, "the added vector's length in units of the median activation norm",
                extreme=1.0, extreme_note="the edit moves the activation by more than its own norm"),
        POSITION,
    )
    tensor_spec = (TensorSpec("vector.{L}", ("d_model",)), SINK_NORM)
    task_defaults = {"truthfulqa": {"layers": list(range(10, 30)), "alpha": 0.05}}
    demo_reference = ("detox", "sentiment")

    @classmethod
    def for_task(cls, model: Any, task: Any, settings: dict[str, Any]) -> ActAdd:
        """The mean difference of the task's contrast texts (``Task.contrast_texts``), read at the task's
        position."""
        pos, neg = task.contrast_texts()
        return cls.fit(model, pos, neg, layers=settings["layers"], alpha=settings["alpha"],
                       position=task.contrast_position, progress=task.progress)

    @classmethod
    @checked_settings
    def fit(cls, model: Any, positive: Sequence[str], negative: Sequence[str], layers: Sequence[int] = (15,),
            alpha: float = 0.3, position: str = "mean", chat: bool = False, progress: bool = True) -> ActAdd:
        layers = check_layers(list(layers), model.cfg.n_layers)
        names = [resid_hook_name(layer) for layer in layers]
        hp = collect_activations(model, positive, layers=layers, position=position, chat=chat, progress=progress)
        hn = collect_activations(model, negative, layers=layers, position=position, chat=chat, progress=progress)
        tensors = {}
        for layer, name in zip(layers, names, strict=True):
            v = mean_difference(hp[name], hn[name])
            check_finite(v, "steering vector")
            # Unit direction scaled to the typical activation norm: alpha = 1 moves h by about |h|.
            norms = torch.cat([hp[name], hn[name]]).norm(dim=-1)
            tensors[f"vector.{layer}"] = v / v.norm().clamp_min(1e-12) * norms.median()
            tensors[f"sink_norm.{layer}"] = sink_threshold(norms)
        return cls(model=ModelSpec.of(model), layers=layers, settings={"alpha": alpha, "position": position},
                   tensors=tensors)

    def hook_fn(self, layer: int) -> HookFn:
        key = f"vector.{layer}"

        def add(act: torch.Tensor, hook: Any) -> torch.Tensor:
            v = self.tensors[key]
            return act + self.settings["alpha"] * v.to(act.dtype)
        return add

    def steering_vectors(self) -> dict[int, torch.Tensor]:
        """``{layer: alpha * vector}``: what the hook adds at each layer (exported by ``export_gguf``)."""
        return {layer: self.settings["alpha"] * self.tensors[f"vector.{layer}"] for layer in self.layers}


def orthonormal_basis(directions: Float[torch.Tensor, "k d"], tol: float = 1e-6,
                      dtype: torch.dtype = torch.float32) -> Float[torch.Tensor, "d r"]:
    """Orthonormal basis (columns) of the span of the rows of ``directions``, via SVD in float64 (singular
    values below ``tol`` times the largest are dropped; all-zero input gives no column)."""
    u, s, _ = torch.linalg.svd(directions.double().T, full_matrices=False)
    rank = int((s > tol * s.max()).sum())
    return u[:, :rank].to(dtype)


def project_out(h: Float[torch.Tensor, "... d"], basis: Float[torch.Tensor, "d r"]) -> Float[torch.Tensor, "... d"]:
    """``h - U U^T h``: remove the component of ``h`` in the span of ``basis`` (orthonormal columns)."""
    return h - (h @ basis) @ basis.T


@register
class OrthoProj(Editor):
    """Directional ablation: remove the component along the undesirable direction ``mean(H-) - mean(H+)``."""

    method = "orthoproj"
    # 1: contrast pairs that share no first word no longer lend the positive's first word to the negative
    recipe_revision = 1
    settings_spec = (Setting("layers", "layers", list(range(10, 30)), LAYERS_HELP, saved=False), POSITION)
    tensor_spec = (TensorSpec("basis.{L}", ("d_model", "*")), SINK_NORM)
    demo_reference = ("sentiment",)

    @classmethod
    def for_task(cls, model: Any, task: Any, settings: dict[str, Any]) -> OrthoProj:
        """Ablate the direction from the task's positive to its negative contrast texts."""
        pos, neg = task.contrast_texts()
        return cls.fit(model, pos, neg, layers=settings["layers"], position=task.contrast_position,
                       progress=task.progress)

    @classmethod
    @checked_settings
    def fit(cls, model: Any, positive: Sequence[str], negative: Sequence[str], layers: Sequence[int] = (15,),
            position: str = "mean", chat: bool = False, progress: bool = True) -> OrthoProj:
        layers = check_layers(list(layers), model.cfg.n_layers)
        hp = collect_activations(model, positive, layers=layers, position=position, chat=chat, progress=progress)
        hn = collect_activations(model, negative, layers=layers, position=position, chat=chat, progress=progress)
        tensors = {}
        for layer in layers:
            name = resid_hook_name(layer)
            d = mean_difference(hn[name], hp[name])
            check_finite(d, "undesirable direction")
            tensors[f"basis.{layer}"] = orthonormal_basis(d[None])
            tensors[f"sink_norm.{layer}"] = sink_threshold(torch.cat([hp[name], hn[name]]).norm(dim=-1))
        return cls(model=ModelSpec.of(model), layers=layers, settings={"position": position}, tensors=tensors)

    def hook_fn(self, layer: int) -> HookFn:
        key = f"basis.{layer}"

        def ablate(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return project_out(act, self.tensors[key].to(act.dtype))
        return ablate


@register
class PromptEditor(Editor):
    """The prompting baseline: no hooks; a system prompt asking for the desired behaviour.

    ``fwd_hooks()`` is empty; ``steerlens.generate(..., system=editor.system)`` uses the prompt.
    """

    method = "prompt"
    settings_spec = (Setting("system", "str", None, "the system prompt", recipe=False),)
    tensor_spec = ()
    demo_reference = ("detox", "sentiment", "truthfulness")

    @classmethod
    def for_task(cls, model: Any, task: Any, settings: dict[str, Any]) -> PromptEditor:
        """The task's system prompt (``Task.system_prompt``)."""
        return cls.fit(model, task.system_prompt)

    @classmethod
    def fit(cls, model: Any, system: str) -> PromptEditor:
        if not system.strip():
            raise ValueError("The prompting baseline needs a non-empty system prompt")
        return cls(model=ModelSpec.of(model), layers=[], settings={"system": system})

    @property
    def system(self) -> str:
        return self.settings["system"]

    def explain(self, model: Any, context: str, answer: str) -> str:
        return f"no hook: the system prompt \"{self.system}\" (raw text: as a first line)"

    def fwd_hooks(self, strength: float = 1.0) -> list:
        if strength != 1.0:
            raise ValueError("The prompting baseline has no hooks and no strength to scale; use strength=1")
        return []
