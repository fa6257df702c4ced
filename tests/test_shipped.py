"""The artefacts shipped in the package for the default model: current (named like the entry the code would
build today) and equal to a rebuild."""

import pytest
import torch

from steerlens.methods.pace import ConceptDictionary

pytestmark = pytest.mark.integration


def test_shipped_dictionary_matches_a_rebuild(model, tmp_path, monkeypatch):
    """The float16 detox dictionary in the package is what a build gives (three atoms rebuilt from their
    stimuli), and PaCE's detox default loads it on an empty cache without building anything."""
    from steerlens.data import data_dir
    from steerlens.harness import DEFAULTS
    from steerlens.methods.pace import SHIPPED_DIR, cut_after_word, default_dictionary, read_stimuli

    (shipped_path,) = [p for p in SHIPPED_DIR.iterdir() if (p / "dictionary.json").is_file()]
    shipped = ConceptDictionary.load(shipped_path)
    every = read_stimuli(data_dir() / "concepts" / "stimuli.jsonl")
    picks = [shipped.concepts[i] for i in (0, len(shipped.concepts) // 2, len(shipped.concepts) - 1)]
    stim = {c: cut_after_word(c, every[c]) for c in picks}
    rebuilt = ConceptDictionary.build(model, stim, sorted(shipped.atoms), position="last", progress=False)
    for layer, atoms in rebuilt.atoms.items():
        want = shipped.atoms[layer][[shipped.concepts.index(c) for c in picks]]
        err = ((atoms - want).norm(dim=-1) / want.norm(dim=-1)).max()
        assert err < 2e-3, (layer, float(err))

    def no_build(*a, **k):
        raise AssertionError("built a dictionary instead of loading the shipped one")

    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    monkeypatch.setattr(ConceptDictionary, "build", no_build)
    s = DEFAULTS["pace"]["detox"]
    dic = default_dictionary(model, stimuli=s["stimuli"], position=s["atom_position"], progress=False)
    assert dic.concepts == shipped.concepts and "detox" in dic.partitions
    small = default_dictionary(model, n_concepts=500, stimuli=s["stimuli"], position=s["atom_position"],
                               progress=False)
    torch.testing.assert_close(small.atoms[15], shipped.atoms[15][:500])


def test_shipped_editors_are_current_and_load(model, tmp_path, monkeypatch):
    """Each shipped editor is the entry fit_editor would look for with today's data and defaults (a change to
    either renames the entry: run tools/ship_artefacts.py), and is used instead of a fit on an empty cache."""
    import sys
    from pathlib import Path

    from steerlens import harness
    from steerlens.editing import REGISTRY

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from ship_artefacts import SHIPPED_FITS

    shipped = sorted(p.name for p in harness.SHIPPED_EDITORS.iterdir())
    assert shipped == sorted(harness.editor_entry(model, m, t, settings=s)[0] for m, t, s in SHIPPED_FITS)

    def no_fit(*a, **k):
        raise AssertionError("fitted instead of loading the shipped editor")

    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    for method, _, _ in SHIPPED_FITS:
        monkeypatch.setattr(REGISTRY[method], "for_task", classmethod(no_fit))
    for method, task, settings in SHIPPED_FITS:
        editor = harness.fit_editor(model, method, task, settings=settings, progress=False)
        assert editor.method == method and editor.model.fingerprint is not None

    # RE-Control's rollouts are rollout_tokens long whatever length is evaluated: one value function serves
    # every --max-new-tokens (it was refitted from scratch for each before)
    for task in ("sentiment", "detox"):
        names = {harness.editor_entry(model, "recontrol", task, max_new_tokens=n)[0] for n in (8, 16, 48, 96)}
        assert len(names) == 1
        assert harness.fit_editor(model, "recontrol", task, max_new_tokens=16, progress=False).method == "recontrol"

    # a --train file that is a copy of the shipped TruthfulQA rows is the shipped training set: no fit
    from steerlens.data import truthfulqa_dev_path
    from steerlens.tasks import load_items

    copy = tmp_path / "dev.csv"
    copy.write_bytes(truthfulqa_dev_path().read_bytes())
    rows = load_items(copy, "truthfulqa")
    assert harness.fit_editor(model, "sea", "truthfulqa", train=rows, progress=False).method == "sea"
    with pytest.raises(AssertionError, match="fitted instead"):  # one row fewer: not the shipped set, so a fit
        harness.fit_editor(model, "sea", "truthfulqa", train=rows[1:], progress=False)


@pytest.mark.parametrize("task", ["sentiment", "detox"])
def test_recontrol_default_edit_is_the_bound_it_promises(model, task):
    """The default RE-Control editor's step and bound are fractions of the state's norm and the bound binds:
    on real states at its hook the control has norm max_norm * |s| (the paper's raw step moved the state by about
    4% of its norm, which changed nothing)."""
    from steerlens import harness
    from steerlens.generation import encode
    editor = harness.fit_editor(model, "recontrol", task, progress=False)
    s = editor.settings
    assert s["relative"] and s["alpha"] * s["n_steps"] >= s["max_norm"]
    tokens, mask = encode(model, ["The weather today is grey and the train was late again, so"])
    hook = editor.state_hook  # the final state, or a block's output for the residual placement
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=hook)
    states = cache[hook][0, 1:].float()
    u, trace = editor._ascent(states)
    share = editor.state_of(u).norm(dim=-1) / editor.state_of(states).norm(dim=-1)
    torch.testing.assert_close(share, torch.full_like(share, s["max_norm"]), atol=1e-4, rtol=1e-4)
    assert torch.all(trace[-1] > trace[0])


def test_sea_truthfulqa_default_keeps_the_model_writing(model):
    """SEA's TruthfulQA default must not trade the text for multiple-choice points: over the unsteered model's
    own replies, the steered next-token distributions stay within 1 nat (KL) on average. The centred variant,
    which scores higher on multiple choice, drifts by about 6 nats and fails this (benchmarks/sea_fluency.py)."""
    from steerlens.analysis import compare_edits
    from steerlens.generation import format_chat, generate
    from steerlens.harness import fit_editor

    sea = fit_editor(model, "sea", "truthfulqa", progress=False)
    drifts = []
    for q in ("What happens if you crack your knuckles a lot?", "Can you see the Great Wall of China from space?"):
        reply = generate(model, q, max_new_tokens=20)[0]
        kl = compare_edits(model, {"sea": sea}, format_chat(model.tokenizer, q) + reply).kl[0]
        drifts.append(float(kl[-20:].mean()))
    assert max(drifts) < 1.0, drifts


def test_recipe_revision_renames_the_cache_entry(model, monkeypatch):
    """A method whose recipe changed (recipe_revision) gets a new cache entry name, so an editor fitted by the
    old recipe is refitted rather than reused; a revision of 0 leaves the name as before revisions existed."""
    from steerlens import harness
    from steerlens.methods.baselines import ActAdd

    now = harness.editor_entry(model, ActAdd, "detox")[0]
    monkeypatch.setattr(ActAdd, "recipe_revision", 0)
    before = harness.editor_entry(model, ActAdd, "detox")[0]
    monkeypatch.setattr(ActAdd, "recipe_revision", 2)
    assert len({now, before, harness.editor_entry(model, ActAdd, "detox")[0]}) == 3
