"""Caches that survive interruptions and concurrent use: atomic entries, resumable builds, inter-process locks."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from steerlens.methods import pace
from steerlens.methods.pace import ConceptDictionary, default_dictionary


def stimuli_file(tmp_path, n=7):
    path = tmp_path / "stimuli.jsonl"
    path.write_text("\n".join(json.dumps({"concept": f"w{i}", "stimuli": [f"a w{i}", f"the w{i} here"]})
                              for i in range(n)) + "\n")
    return path


@pytest.mark.integration  # the tiny model with the default model's tokenizer
class TestResumableDictionary:
    def test_interrupted_build_resumes_and_matches_an_uninterrupted_one(self, tiny_chat, tmp_path, monkeypatch):
        tiny = tiny_chat
        path = stimuli_file(tmp_path)
        monkeypatch.setattr(pace, "BUILD_CHUNK", 2)  # 7 concepts: chunks of 2, 2, 2, 1
        monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path / "whole"))
        whole = default_dictionary(tiny, stimuli=path, layers=[1, 2], progress=False)

        monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path / "cut"))
        real_build, calls = ConceptDictionary.build, []

        def failing(*a, **k):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt  # Ctrl-C during the third chunk
            return real_build(*a, **k)

        monkeypatch.setattr(ConceptDictionary, "build", failing)
        with pytest.raises(KeyboardInterrupt):
            default_dictionary(tiny, stimuli=path, layers=[1, 2], progress=False)
        entries = list((tmp_path / "cut" / "dictionaries").iterdir())
        assert not any((e / "dictionary.json").exists() for e in entries)  # nothing a later run would trust
        (partial,) = [e for e in entries if e.name.endswith(".partial")]
        assert sorted(f.name for f in partial.iterdir()) == ["000000-000002.safetensors", "000002-000004.safetensors"]

        calls.clear()
        monkeypatch.setattr(ConceptDictionary, "build", lambda *a, **k: calls.append(1) or real_build(*a, **k))
        resumed = default_dictionary(tiny, stimuli=path, layers=[1, 2], progress=False)
        assert len(calls) == 2  # the two missing chunks only
        assert resumed.concepts == whole.concepts
        for layer in (1, 2):
            torch.testing.assert_close(resumed.atoms[layer], whole.atoms[layer], atol=1e-5, rtol=1e-5)
        assert not partial.exists()  # cleaned once the whole entry is written


LOCK_SCRIPT = textwrap.dedent('''
    import os, sys, time
    from steerlens.files import cache_lock
    count, log = sys.argv[1], sys.argv[2]
    # a barrier: both processes have imported steerlens before either takes the lock
    open(f"{log}.ready{os.getpid()}", "w").close()
    while len([f for f in os.listdir(os.path.dirname(log)) if ".ready" in f]) < 2:
        time.sleep(0.05)
    with cache_lock(count, "counting"):
        n = int(open(count).read() or 0) if __import__("os").path.exists(count) else 0
        time.sleep(1.0)  # a slow build: the other process must wait, not interleave
        open(count, "w").write(str(n + 1))
    open(log, "a").write("done\\n")
''')

BUILD_SCRIPT = textwrap.dedent('''
    import sys, time
    from steerlens.methods import pace
    from steerlens.methods.pace import ConceptDictionary, default_dictionary
    from transformers import AutoTokenizer
    from steerlens.models import _attach_tokenizer, tiny_model
    stimuli, log, tokenizer = sys.argv[1], sys.argv[2], AutoTokenizer.from_pretrained(sys.argv[3])
    real = ConceptDictionary.build
    def slow(*a, **k):
        open(log, "a").write("build\\n")
        time.sleep(1.0)
        return real(*a, **k)
    ConceptDictionary.build = slow
    model = tiny_model(n_layers=3, d_vocab=len(tokenizer))
    _attach_tokenizer(model, tokenizer)
    dic = default_dictionary(model, stimuli=stimuli, layers=[1], progress=False)
    print(float(dic.atoms[1].sum()))
''')


class TestTwoProcesses:
    def run_two(self, script, args, tmp_path, env=None):
        import os

        environment = {**os.environ, "STEERLENS_CACHE": str(tmp_path / "cache"), **(env or {})}
        procs = [subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=environment) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
        return outs

    def test_lock_serialises_two_real_processes(self, tmp_path):
        count, log = tmp_path / "count", tmp_path / "log"
        outs = self.run_two(LOCK_SCRIPT, [str(count), str(log)], tmp_path)
        assert count.read_text() == "2"  # no lost update
        assert any("waiting for it to finish" in err for _, err in outs)

    @pytest.mark.integration
    def test_two_processes_build_one_dictionary_once(self, tiny_chat, tmp_path):
        from steerlens.models import _hf_cache_path

        log = tmp_path / "log"
        outs = self.run_two(BUILD_SCRIPT, [str(stimuli_file(tmp_path, n=3)), str(log), str(_hf_cache_path())],
                            tmp_path)
        assert log.read_text().count("build") == 1  # the second process waited, then loaded the first's
        assert outs[0][0].strip() == outs[1][0].strip()


@pytest.mark.integration
def test_interrupted_recontrol_fit_resumes_from_its_rollouts(tiny_chat, tmp_path, monkeypatch):
    from steerlens import harness, tasks
    from steerlens.methods import recontrol

    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    settings = {"epochs": 1, "samples": 1, "rollout_tokens": 4}
    real_train, real_rollout, rollouts = recontrol.fit_value, tasks.rollout, []

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tasks, "rollout", lambda *a, **k: rollouts.append(1) or real_rollout(*a, **k))
    monkeypatch.setattr(recontrol, "fit_value", interrupted)
    with pytest.raises(KeyboardInterrupt):
        harness.fit_editor(tiny_chat, "recontrol", "sentiment", max_new_tokens=4, settings=settings, progress=False)
    assert len(rollouts) == 2  # chat and raw prompts, both kept in the .partial folder
    monkeypatch.setattr(recontrol, "fit_value", real_train)
    editor = harness.fit_editor(tiny_chat, "recontrol", "sentiment", max_new_tokens=4, settings=settings,
                                progress=False)
    assert len(rollouts) == 2 and editor.method == "recontrol"  # no rollout made again
    assert not list((tmp_path / "editors").glob("*.partial"))


class TestAtomicFile:
    def test_an_interrupted_write_keeps_the_old_content_and_leaves_no_temporary(self, tmp_path):
        from steerlens.files import atomic_file

        target = tmp_path / "entry.json"
        target.write_text("old")
        with pytest.raises(KeyboardInterrupt), atomic_file(target) as tmp:
            tmp.write_text("half-writ")
            raise KeyboardInterrupt
        assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
        with atomic_file(target) as tmp:
            tmp.write_text("new")
        assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]

    def test_an_interrupted_weights_conversion_leaves_no_cache_entry(self, tmp_path, monkeypatch):
        """The dequantised weights are written to a temporary folder renamed into place: a failure while
        saving leaves neither a half-written entry nor the temporary folder."""
        from steerlens import models

        class Fake:
            config = type("C", (), {"name_or_path": ""})()
            hf_quantizer = None

            def save_pretrained(self, path):
                path.mkdir(parents=True)
                (path / "model.safetensors").write_text("half")
                raise KeyboardInterrupt

        import transformers

        monkeypatch.setattr(models, "gguf_path", lambda fetch=True: tmp_path / "x.gguf")
        monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Fake())
        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: Fake())
        target = tmp_path / "cache" / "model"
        target.parent.mkdir()
        with pytest.raises(KeyboardInterrupt):
            models._convert_gguf(target, verbose=False)
        assert list(target.parent.iterdir()) == []
        assert not models._complete(target)


def test_memo_builds_once_and_rebuilds_a_damaged_entry(tmp_path):
    from steerlens.files import content_key, memo

    calls = []

    def make():
        calls.append(1)
        return {"x": len(calls)}

    save = lambda v, p: p.write_text(json.dumps(v))  # noqa: E731
    load = lambda p: json.loads(p.read_text())  # noqa: E731
    path = tmp_path / "c" / f"{content_key('a', [1, 2])}.json"
    assert memo(path, make, save, load) == {"x": 1}
    assert memo(path, make, save, load) == {"x": 1} and len(calls) == 1
    path.write_text("{not json")
    assert memo(path, make, save, load) == {"x": 2}  # a damaged entry is rebuilt, not trusted
    assert content_key("a", [1, 2]) != content_key("a", [2, 1])


def test_neutral_answers_and_activations_are_cached_by_content(tiny_chat, tmp_path, monkeypatch):
    """A refit of SEA with other settings generates no neutral answer and runs no forward pass."""
    import steerlens.demonstrations as demonstrations
    import steerlens.methods.sea as sea
    from steerlens.demonstrations import Demonstrations

    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    demos = Demonstrations(["Q one?", "Q two?", "Q one?"], ["yes", "no", "maybe"], ["a", "b", "c"])
    first = demos.with_neutral(tiny_chat, max_new_tokens=3, progress=False)
    assert len(first.neutral) == 3 and first.neutral[0] == first.neutral[2]  # one answer per distinct prompt
    acts = sea.demonstration_activations(tiny_chat, first, [1, 2], progress=False)

    def fail(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(demonstrations, "generate", fail)
    monkeypatch.setattr(sea, "collect_activations", fail)
    again = demos.with_neutral(tiny_chat, max_new_tokens=3, progress=False)
    assert again.neutral == first.neutral
    cached = sea.demonstration_activations(tiny_chat, again, [1, 2], progress=False)
    for which in acts:
        for layer in (1, 2):
            torch.testing.assert_close(cached[which][layer], acts[which][layer])
    with pytest.raises(AssertionError, match="recomputed"):  # other prompts: not in the cache
        Demonstrations(["Q three?"], ["x"], ["y"]).with_neutral(tiny_chat, max_new_tokens=3, progress=False)
