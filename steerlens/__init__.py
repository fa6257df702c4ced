"""steerlens: inference-time alignment by representation editing, as TransformerLens hooks.

Every editor produces ``[(hook_name, fn)]`` pairs for ``run_with_hooks`` / ``model.hooks`` and offers
``editor.apply(model)`` (a context manager that always removes its hooks), ``save`` and ``load``.
"""

from . import methods  # noqa: F401  (registers the editors)
from .activations import collect_activations
from .editing import REGISTRY, Editor, ModelSpec
from .generation import encode, format_chat, generate
from .methods import ActAdd, Demonstrations, IdentityEditor, OrthoProj, PromptEditor, SpectralEditor
from .models import DEFAULT_MODEL, cache_dir, load_model, tiny_model

__all__ = [
    "DEFAULT_MODEL", "REGISTRY", "ActAdd", "Demonstrations", "Editor", "IdentityEditor", "ModelSpec", "OrthoProj",
    "PromptEditor", "SpectralEditor", "cache_dir", "collect_activations", "encode", "format_chat", "generate",
    "load_model", "tiny_model",
]
