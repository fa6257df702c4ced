"""Editing methods and baselines, registered by name in ``steerlens.editing.REGISTRY``."""

from .baselines import ActAdd, IdentityEditor, OrthoProj, PromptEditor
from .sea import Demonstrations, SpectralEditor

__all__ = ["ActAdd", "Demonstrations", "IdentityEditor", "OrthoProj", "PromptEditor", "SpectralEditor"]
