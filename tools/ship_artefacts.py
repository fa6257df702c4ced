"""Write the default model's prebuilt artefacts into the package, so that a fresh install runs PaCE, SEA on
TruthfulQA and RE-Control without their slow first builds (together about 25 min on 2 CPU cores):

- the detox concept dictionary (float16 atoms, ``steerlens/assets/dictionaries/``; built in about 15 min);
- the fitted editors the demo and ``steerlens eval`` use by default whose fits are slow
  (``steerlens/assets/editors/``): RE-Control for sentiment and for detox (1,383 and 960 rollouts, about 10
  and 7 min; a linear value function, so each editor is a few KB), SEA for TruthfulQA (neutral answers to
  419 questions) and SEA for detox (about 2 min; the analysis notebook compares it with the other methods).

    python tools/ship_artefacts.py        # fits or builds what the cache does not hold, then copies

Each artefact is named like its cache entry (same data, settings and model give the same name), so steerlens
finds it exactly where it would have built the same thing; a change to the shipped data or the defaults
changes the name, and ``tests/test_shipped.py`` then fails until this script is run again. The dictionary's
partitions are not stored (they are recomputed from ``data/concepts/concepts.tsv`` on load).
"""

from __future__ import annotations

import shutil

import torch

import steerlens
from steerlens.editing import ModelSpec
from steerlens.harness import DEFAULTS, SHIPPED_EDITORS, editor_entry, fit_editor
from steerlens.methods.pace import SHIPPED_DIR, ConceptDictionary, default_dictionary
from steerlens.methods.recontrol import FINAL_STATE_SENTIMENT

# (method, task, settings): the defaults, and sentiment's RE-Control at the paper's placement (notebook 04)
SHIPPED_FITS = [("recontrol", "sentiment", None), ("recontrol", "sentiment", FINAL_STATE_SENTIMENT),
                ("recontrol", "detox", None), ("sea", "truthfulqa", None), ("sea", "detox", None)]


def ship_dictionary(model) -> None:
    s = DEFAULTS["pace"]["detox"]
    dic = default_dictionary(model, stimuli=s["stimuli"], position=s["atom_position"])
    dic.model.check(model, "cached dictionary")
    target = SHIPPED_DIR / dic.settings["whole_name"]
    shutil.rmtree(SHIPPED_DIR, ignore_errors=True)
    # the current model's spec, weights fingerprint included (a dictionary cached by an older steerlens has none)
    shipped = ConceptDictionary(dic.concepts, dic.atoms, ModelSpec.of(model),
                                {k: v for k, v in dic.settings.items() if k not in ("whole_name", "sliced_from")})
    shipped.settings["stimuli"] = f"{s['stimuli']} (shipped float16 copy)"
    shipped.save(target, dtype=torch.float16)
    report(target)


def ship_editors(model) -> None:
    # fitted (or found: in the cache, or already shipped under the same name) before the old copies go
    editors = {editor_entry(model, method, task, settings=settings)[0]: fit_editor(model, method, task,
                                                                                settings=settings)
               for method, task, settings in SHIPPED_FITS}
    shutil.rmtree(SHIPPED_EDITORS, ignore_errors=True)
    for name, editor in editors.items():
        editor.model = ModelSpec.of(model)
        report(editor.save(SHIPPED_EDITORS / name))


def report(path) -> None:
    size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    print(f"wrote {path} ({size:.2f} MiB)")


if __name__ == "__main__":
    import sys

    default = steerlens.load_model()
    if "--editors-only" not in sys.argv:
        ship_dictionary(default)
    ship_editors(default)
