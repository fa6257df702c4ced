"""Editing methods and baselines, registered by name in ``steerlens.editing.REGISTRY``."""

from .baselines import ActAdd, IdentityEditor, OrthoProj, PromptEditor
from .pace import ConceptDictionary, PaCEEditor
from .recontrol import LinearValue, MLPValue, PCAValue, ValueController, ValueFunction
from .sea import Demonstrations, SpectralEditor

__all__ = ["ActAdd", "ConceptDictionary", "Demonstrations", "IdentityEditor", "OrthoProj", "PaCEEditor", "PromptEditor",
           "SpectralEditor", "ValueController", "ValueFunction", "MLPValue", "LinearValue", "PCAValue"]
