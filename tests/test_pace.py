"""PaCE on tensors and on a tiny random model: identity, removal, partitions, persistence, KV cache."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from steerlens.data import data_dir
from steerlens.editing import Editor, ModelSpec, prompt_span
from steerlens.generation import generate_tokens, left_pad
from steerlens.methods.pace import (
    ConceptDictionary,
    PaCEEditor,
    curated_partition,
    read_stimuli,
    shipped_concepts,
    stimuli_path,
    tagged_concepts,
    template_stimuli,
)
from steerlens.models import tiny_model


def dictionary(model, k=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = model.cfg.d_model
    atoms = {1: torch.randn(k, d, generator=g) * 3, 2: torch.randn(k, d, generator=g) * 3}
    return ConceptDictionary([f"c{i}" for i in range(k)], atoms, ModelSpec.of(model))


class TestRemoval:
    def test_no_undesirable_concept_is_identity(self, tiny):
        dic = dictionary(tiny)
        dic.set_partition("none", [])
        ed = PaCEEditor.from_dictionary(dic, "none", [1, 2])
        tokens = torch.randint(0, 101, (2, 6))
        torch.testing.assert_close(tiny.run_with_hooks(tokens, fwd_hooks=ed.fwd_hooks()), tiny(tokens))

    @pytest.mark.parametrize("centre", [True, False])
    def test_removes_exactly_the_undesirable_part(self, tiny, centre):
        dic = dictionary(tiny)
        dic.set_partition("t", ["c0", "c3"])
        ed = PaCEEditor.from_dictionary(dic, "t", [1], alpha=0.01, centre=centre)
        D = ed.tensors["atoms.1"]
        bad = torch.nonzero(ed.tensors["undesirable"])[:, 0].tolist()
        assert [ed.settings["concepts"][i] for i in bad] == ["c0", "c3"]
        keep = bad[-1] + 2
        z = (2.0 * D[:, bad[0]] + 1.5 * D[:, bad[1]] + 1.0 * D[:, keep])[None] + 0.01 * torch.randn(1, 32)
        c = ed.coefficients(1, z)
        out = ed.hook_fn(1)(z[None], None)[0]
        expected = z - (c[:, bad] @ D[:, bad].T)
        torch.testing.assert_close(out, expected)
        # the removed concepts are (almost) gone from a fresh decomposition; the kept one stays
        c_after = ed.coefficients(1, out)
        assert c_after[0, bad].abs().max() < 0.1 * c[0, bad].abs().max()
        assert c_after[0, keep] == pytest.approx(float(c[0, keep]), rel=0.2)

    def test_a_smaller_dictionary_keeps_the_undesirable_concepts_beyond_it(self, tiny):
        dic = dictionary(tiny)
        dic.set_partition("t", ["c1", "c10"])
        ed = PaCEEditor.from_dictionary(dic, "t", [1], n_concepts=4, centre=False)
        assert ed.settings["concepts"] == ["c0", "c1", "c2", "c3", "c10"]
        assert ed.tensors["undesirable"].tolist() == [False, True, False, False, True]
        torch.testing.assert_close(ed.tensors["atoms.1"][:, 4], dic.unit_atoms(1)[:, 10])
        with pytest.raises(ValueError, match="'n_concepts' = 0 is not allowed: it must be an integer >= 1"):
            PaCEEditor.from_dictionary(dic, "t", [1], n_concepts=0)

    def test_centred_atoms_span_the_raw_atoms(self, tiny):
        dic = dictionary(tiny)
        dic.set_partition("t", [])
        D = PaCEEditor.from_dictionary(dic, "t", [1]).tensors["atoms.1"]
        raw = dic.atoms[1].T
        fit = D @ torch.linalg.lstsq(D, raw).solution
        torch.testing.assert_close(fit, raw, atol=1e-4, rtol=1e-4)

    @pytest.mark.parametrize("solver", ["enet", "lasso", "omp"])
    def test_every_solver_runs_and_commutes_with_kv_cache(self, tiny, solver):
        dic = dictionary(tiny)
        dic.set_partition("t", [0, 1, 2])
        ed = PaCEEditor.from_dictionary(dic, "t", [1, 2], solver=solver, n_nonzero=4)
        tokens, mask = left_pad([[3, 4, 5, 6], [7, 8]], pad_id=0)
        with ed.apply(tiny):
            a = generate_tokens(tiny, tokens, mask, max_new_tokens=5, use_cache=True, stop_token_ids=[])
            b = generate_tokens(tiny, tokens, mask, max_new_tokens=5, use_cache=False, stop_token_ids=[])
        assert a == b


class TestPositions:
    def dic(self, tiny):
        dic = dictionary(tiny)
        dic.set_partition("t", [0, 1, 2])
        return dic

    def editors(self, tiny):
        dic = self.dic(tiny)
        return {p: PaCEEditor.from_dictionary(dic, "t", [1], alpha=0.01, positions=p)
                for p in ("all", "prompt", "generated")}

    def test_generated_edits_only_after_the_prompt(self, tiny):
        eds = self.editors(tiny)
        z = torch.randn(2, 7, 32) * 3
        full = eds["all"].hook_fn(1)(z, None)
        assert not torch.allclose(full, z)
        with prompt_span(4):
            gen = eds["generated"].hook_fn(1)(z, None)
            prm = eds["prompt"].hook_fn(1)(z, None)
        torch.testing.assert_close(gen[:, :4], z[:, :4])
        torch.testing.assert_close(gen[:, 4:], full[:, 4:])
        torch.testing.assert_close(prm[:, :4], full[:, :4])
        torch.testing.assert_close(prm[:, 4:], z[:, 4:])
        with prompt_span(4) as span:  # one decoding step with a cache of 6 positions: absolute position 6
            span.offset = 6
            torch.testing.assert_close(eds["generated"].hook_fn(1)(z[:, 6:], None), full[:, 6:])
            torch.testing.assert_close(eds["prompt"].hook_fn(1)(z[:, 6:], None), z[:, 6:])

    def test_needs_the_prompt_end_and_a_known_rule(self, tiny):
        eds = self.editors(tiny)
        with pytest.raises(RuntimeError, match="where the prompt ends"):
            eds["generated"].hook_fn(1)(torch.randn(1, 3, 32), None)
        with pytest.raises(ValueError, match="'positions' = \"last\" is not allowed: it must be one of"):
            PaCEEditor.from_dictionary(self.dic(tiny), "t", [1], positions="last")

    @pytest.mark.parametrize("positions", ["prompt", "generated"])
    def test_commutes_with_kv_cache(self, tiny, positions):
        """The state after the edited layer at the position producing each next token, recorded during
        cached and uncached generation (same forced tokens), is the same, and is edited exactly where
        ``positions`` says: the prefill's last position is prompt, every later one is generated."""
        ed = self.editors(tiny)[positions]
        tokens, mask = left_pad([[3, 4, 5, 6], [7, 8]], pad_id=0)

        def states(editor, use_cache):
            seen = []
            hooks = [("blocks.2.hook_resid_pre", lambda act, hook: seen.append(act[:, -1].clone()))]
            with tiny.hooks(fwd_hooks=(editor.fwd_hooks() if editor else []) + hooks):
                generate_tokens(tiny, tokens, mask, max_new_tokens=5, use_cache=use_cache, stop_token_ids=[])
            return torch.stack(seen)

        cached, uncached, plain = states(ed, True), states(ed, False), states(None, True)
        torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)
        changed = (cached - plain).norm(dim=-1).amax(-1) > 1e-4  # per step
        assert changed.tolist() == ([True] + [False] * 4 if positions == "prompt" else [False] + [True] * 4)


class TestDictionaryAndPartitions:
    def test_partitions_and_errors(self, tiny, capsys):
        dic = dictionary(tiny)
        assert curated_partition(dic, "detox", ["c2", "c7", "nope"]) == [2, 7]
        assert "nope" in capsys.readouterr().out
        with pytest.raises(ValueError, match="Unknown concept"):
            dic.set_partition("x", ["zzz"])
        with pytest.raises(ValueError, match="no partition for task"):
            PaCEEditor.from_dictionary(dic, "other", [1])
        with pytest.raises(ValueError, match="expected"):
            ConceptDictionary(["a"], {1: torch.zeros(2, 32)}, ModelSpec.of(tiny))

    def test_dictionary_and_editor_round_trip(self, tiny, tmp_path):
        dic = dictionary(tiny)
        dic.set_partition("t", [1, 4])
        back = ConceptDictionary.load(dic.save(tmp_path / "dic"))
        assert back.concepts == dic.concepts and back.partitions == dic.partitions
        torch.testing.assert_close(back.atoms[2], dic.atoms[2])
        ed = PaCEEditor.from_dictionary(back, "t", [2], n_concepts=8)
        loaded = Editor.load(ed.save(tmp_path / "ed"), model=tiny)
        tokens = torch.randint(0, 101, (1, 5))
        torch.testing.assert_close(tiny.run_with_hooks(tokens, fwd_hooks=loaded.fwd_hooks()),
                                   tiny.run_with_hooks(tokens, fwd_hooks=ed.fwd_hooks()))
        with pytest.raises(ValueError):
            Editor.load(tmp_path / "ed", model=tiny_model(n_layers=3, d_model=48))


class TestShippedConcepts:
    def test_task_concepts_come_first_and_every_concept_has_ten_stimuli(self):
        concepts = shipped_concepts()
        assert len(concepts) >= 3000 and len(set(concepts)) == len(concepts)
        tagged = set(tagged_concepts("toxicity")) | set(tagged_concepts("negative_sentiment"))
        assert tagged <= set(concepts[:200])  # any prefix of 200+ keeps the task concepts
        stim = template_stimuli(concepts[:5])
        for c, sentences in stim.items():
            assert len(sentences) >= 10 and len(set(sentences)) == len(sentences)
            assert all(s.endswith(c) for s in sentences)

    def test_more_concepts_are_new_words(self):
        more = (data_dir() / "concepts" / "more_concepts.txt").read_text().split()
        assert len(more) == len(set(more)) == 7000
        assert not set(more) & set(shipped_concepts())
        assert all(w.isascii() and w.isalpha() and len(w) >= 3 for w in more)

    def test_read_stimuli_refuses_empty_concepts(self, tmp_path):
        p = tmp_path / "s.jsonl"
        p.write_text('{"concept": "a", "stimuli": ["x a"]}\n{"concept": "b", "stimuli": []}\n')
        with pytest.raises(ValueError, match="no stimuli"):
            read_stimuli(p)
        p.write_text('{"concept": "a", "stimuli": ["x a"]}\n')
        assert read_stimuli(p) == {"a": ["x a"]}

    def test_shipped_model_stimuli_cover_the_concept_list_in_order(self):
        stim = read_stimuli(stimuli_path("model"))
        assert list(stim) == shipped_concepts()  # same order, so every prefix keeps the task concepts
        counts = [len(v) for v in stim.values()]
        assert sum(n >= 10 for n in counts) >= 3090 and min(counts) >= 1
        for c, sentences in stim.items():
            assert len(set(sentences)) == len(sentences)
            assert all(c.lower() in s.lower() for s in sentences), c

    def test_stimuli_path(self, tmp_path):
        assert stimuli_path("frames") is None
        assert stimuli_path("model").name == "stimuli.jsonl"
        with pytest.raises(FileNotFoundError, match="'frames', 'model' or a JSONL path"):
            stimuli_path(tmp_path / "missing.jsonl")


def stimuli_tool():
    path = Path(__file__).parents[1] / "tools" / "generate_stimuli.py"
    spec = importlib.util.spec_from_file_location("generate_stimuli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestStimuliTool:
    def test_keep_uses_of_the_word_and_drops_talk_about_it(self):
        keep = stimuli_tool().keep
        assert keep("cat", "Two cats sat on the warm mat.")  # inflection
        assert not keep("art", "We start the day early.")  # inside another word
        assert not keep("mean", "A mean is a verb used in maths.")  # about the word
        assert not keep("idiot", "I'm sorry, I cannot write idiot.")  # refusal
        assert keep("word", "She kept her word to the end.")  # the concept itself may be a meta word
        assert not keep("dog", "Dog.")  # too short

    def test_refilter_drops_short_rows_and_rewrites(self, tmp_path):
        p = tmp_path / "s.jsonl"
        rows = [{"concept": "cat", "stimuli": ["The cat sleeps all day.", "Cats sound like a noun.",
                                                "My cat likes fish."]},
                {"concept": "dog", "stimuli": ["The dog barks loudly."]}]
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        kept = stimuli_tool().refilter(p, 2)
        assert list(kept) == ["cat"] and kept["cat"]["stimuli"] == ["The cat sleeps all day.", "My cat likes fish."]
        assert [json.loads(x)["concept"] for x in p.read_text().splitlines()] == ["cat"]


def test_cut_after_word(tiny, tmp_path):
    from steerlens.methods.pace import cut_after_word, default_dictionary

    assert cut_after_word("cat", ["Two Cats sat down.", "A dog.", "The concatenated cat ran."]) == [
        "Two Cats", "The concatenated cat"]
    p = tmp_path / "s.jsonl"
    p.write_text('{"concept": "cat", "stimuli": ["A dog barked."]}\n')
    with pytest.raises(ValueError, match="uses the concept word"):
        default_dictionary(tiny, stimuli=p, position="word")


def test_expand_partition_adds_the_nearest_neighbours(tiny):
    from steerlens.methods.pace import expand_partition

    dic = dictionary(tiny, k=12)
    a = dic.atoms[1]
    direction = torch.randn(a.shape[1], generator=torch.Generator().manual_seed(5)) * 20
    for i in (0, 1, 7):  # 0 and 1 undesirable; 7 shares their direction, the others do not
        a[i] += direction
    dic.set_partition("t", [0, 1])
    assert expand_partition(dic, "t", 1, layer=1) == [0, 1, 7]
    assert len(expand_partition(dic, "t", 100, layer=1)) == 12  # never more than the dictionary holds
    with pytest.raises(ValueError, match="partition it first"):
        expand_partition(dic, "other", 3, layer=1)


def test_a_prefix_of_a_cached_dictionary_is_sliced_from_it(tiny, tmp_path, monkeypatch):
    from steerlens.methods.pace import default_dictionary

    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path / "cache"))
    p = tmp_path / "s.jsonl"
    sizes = {"a": 2, "b": 2, "c": 3, "d": 3}
    p.write_text("".join(json.dumps({"concept": c, "stimuli": [f"{w} {c}" for w in "xyz"[:n]]}) + "\n"
                         for c, n in sizes.items()))
    built = []

    def build(model, stimuli, layers, **kw):  # the tiny model has no tokenizer: random atoms stand in
        built.append(list(stimuli))
        g = torch.Generator().manual_seed(len(built))
        atoms = {la: torch.randn(len(stimuli), 32, generator=g) for la in layers}
        per = sum(map(len, stimuli.values())) / len(stimuli)
        return ConceptDictionary(list(stimuli), atoms, ModelSpec.of(model), {"stimuli_per_concept": per})

    monkeypatch.setattr(ConceptDictionary, "build", build)
    full = default_dictionary(tiny, stimuli=p, layers=[1, 2])
    part = default_dictionary(tiny, n_concepts=2, stimuli=p, layers=[1, 2])
    assert built == [list("abcd")] and part.concepts == ["a", "b"]
    assert part.settings["stimuli_per_concept"] == 2.0
    torch.testing.assert_close(part.atoms[2], full.atoms[2][:2])
    default_dictionary(tiny, n_concepts=2, stimuli=p, layers=[1])  # other layers: another dictionary
    assert built == [list("abcd"), ["a", "b"]]



def test_classifier_partition_labels_by_mean_stimulus_score(tiny, capsys):
    from steerlens.methods.pace import classifier_partition, concept_scores

    def scorer(texts):  # "bad" in a sentence scores 1, anything else 0
        return [1.0 if "bad" in t else 0.0 for t in texts]

    stimuli = {"c0": ["a bad one", "bad again"], "c1": ["fine", "bad"], "c2": ["fine", "good", "bad"], "c3": []}
    scores = concept_scores(stimuli, scorer)
    assert scores == {"c0": 1.0, "c1": 0.5, "c2": pytest.approx(1 / 3)}  # c3 has no stimuli: no score
    dic = dictionary(tiny, k=4)
    # strictly above the threshold: c1's 0.5 is not undesirable at 0.5, it is at 0.4
    assert classifier_partition(dic, "t", scores) == [0]
    assert "no score" in capsys.readouterr().out
    assert classifier_partition(dic, "t", scores, threshold=0.4) == [0, 1]
    with pytest.raises(ValueError, match="No concept scores above"):
        classifier_partition(dic, "t", scores, threshold=1.0)
    with pytest.raises(ValueError, match="returned 1 values"):
        concept_scores(stimuli, lambda texts: [0.0])


def test_harness_partition_setting():
    from steerlens import harness

    assert harness.settings_for("pace", "detox", None)["partition"] == "curated"
    with pytest.raises(ValueError, match="No offline classifier"):
        harness.undesirability("truthfulqa")
    neg = harness.undesirability("sentiment")(["I hate this, it is awful.", "I love this, it is wonderful."])
    assert neg[0] > 0.5 > neg[1]
