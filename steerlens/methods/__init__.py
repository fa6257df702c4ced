"""Editing methods and baselines, registered by name in ``steerlens.editing.REGISTRY``."""

from .baselines import ActAdd, IdentityEditor, OrthoProj, PromptEditor

__all__ = ["ActAdd", "IdentityEditor", "OrthoProj", "PromptEditor"]
