"""The demo (the README's main job): every method in the output with its "how" line."""

import json

import pytest

from steerlens.demo import TASKS, format_demo, run_demo

# Small settings so a 3-layer random model fits every method in seconds.
TINY = {"pace": {"n_concepts": 200, "stimuli": "frames", "atom_position": "last", "expand": 0},
        "recontrol": {"epochs": 2, "samples": 1, "rollout_tokens": 4}}


@pytest.mark.integration  # needs the default model's tokenizer
def test_demo_code_path_on_the_tiny_model(tiny_chat, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    result = run_demo(tiny_chat, max_new_tokens=4, settings=TINY, progress=False)
    json.dumps(result)  # the --json content is plain JSON
    assert set(result["tasks"]) == set(TASKS)
    text = format_demo(result)
    for name, spec in TASKS.items():
        rows = result["tasks"][name]["rows"]
        assert len(rows) == len(spec.prompts)
        for row in rows:
            assert set(row["steered"]) == set(spec.methods(name))
            assert all(got["how"] for got in row["steered"].values())
        for method in spec.methods(name):
            assert f"\n  {method:<12} " in text
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "value V(s)" in result["tasks"]["sentiment"]["rows"][0]["steered"]["recontrol"]["how"]
    sea = result["tasks"]["truthfulness"]["rows"][0]["steered"]["sea"]["how"]
    assert "positive directions" in sea and "true answer" in sea and "unsteered" in sea
    assert "undesirable" in result["tasks"]["detox"]["rows"][0]["steered"]["pace"]["how"]


def test_the_demo_plan_comes_from_the_methods_declarations():
    """The demo names no method: each method says which demo task it features (with what to notice) and where
    it is shown for reference; the plan is the same as when the demo listed them itself."""
    assert {k: t.methods(k) for k, t in TASKS.items()} == {
        "detox": ["pace", "actadd", "prompt"], "sentiment": ["recontrol", "actadd", "orthoproj", "prompt"],
        "truthfulness": ["sea", "prompt"]}
    assert TASKS["detox"].notice("detox").startswith("PaCE removes only the concepts")


@pytest.mark.integration
def test_demo_user_prompt_and_filters(tiny_chat, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    result = run_demo(tiny_chat, tasks=["sentiment"], methods=["actadd"], prompt="Tell me about Mondays.",
                      max_new_tokens=3, progress=False)
    (row,) = result["tasks"]["sentiment"]["rows"]
    assert row["text"] == "Tell me about Mondays." and list(row["steered"]) == ["actadd"]
    with pytest.raises(ValueError, match="no task 'math'"):
        run_demo(tiny_chat, tasks=["math"])
    with pytest.raises(ValueError, match="does not show method 'pace'"):
        run_demo(tiny_chat, tasks=["sentiment"], methods=["pace"])
