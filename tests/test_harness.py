"""The evaluation harness behind ``steerlens eval`` / ``bench``: input checks, the JSON contract, and
every method fitted and measured on a few prompts of the real model."""

import json

import pytest

from steerlens import harness
from steerlens.cli import main, parse_settings
from steerlens.data import data_dir, truthfulqa_dev_path
from steerlens.truthfulqa import load_truthfulqa

SCHEMA = {"method", "task", "n", "steered", "unsteered", "seconds", "generations", "settings"}


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_cached_editors_are_keyed_on_the_shipped_data(tmp_path, monkeypatch):
    (tmp_path / "concepts").mkdir()
    tsv = tmp_path / "concepts" / "concepts.tsv"
    tsv.write_text("rank\tconcept\tsource\n0\tshit\tfrequency\n")
    monkeypatch.setattr(harness, "data_dir", lambda: tmp_path)
    before = harness._shipped_data_digest()
    assert harness._shipped_data_digest() == before
    tsv.write_text("rank\tconcept\tsource\n0\tshit\tfrequency,task:toxicity\n")  # a partition changes
    assert harness._shipped_data_digest() != before


def test_fit_editor_refits_when_the_shipped_data_change(tmp_path, monkeypatch, tiny):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir(), data)
    monkeypatch.setattr(harness, "data_dir", lambda: data)
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path / "cache"))
    harness.fit_editor(tiny, "none", "detox", progress=False)
    harness.fit_editor(tiny, "none", "detox", progress=False)  # same data: the cached editor is reused

    def entries():
        return [p for p in (tmp_path / "cache" / "editors").iterdir() if not p.name.startswith(".")]  # .locks aside

    assert len(entries()) == 1
    with (data / "concepts" / "concepts.tsv").open("a") as f:
        f.write("9999\tzzz\ttask:toxicity\n")
    harness.fit_editor(tiny, "none", "detox", progress=False)
    assert len(entries()) == 2


def test_bench_subset_keeps_both_kinds_of_prompt():
    from steerlens.bench import spread

    rows = harness.load_items(data_dir() / "detox" / "eval.jsonl", "detox")
    sub = spread(rows, 10)
    assert len(sub) == 10 and sub == sorted(sub, key=rows.index)  # distinct, in order
    assert sum("prompt" in r for r in sub) == 5 and sum("prefix" in r for r in sub) == 5
    assert spread(rows, None) == rows and spread(rows, 1000) == rows
    with pytest.raises(ValueError):
        spread(rows, 0)


def test_unknown_settings_are_refused(tiny):
    with pytest.raises(ValueError, match="unknown setting"):
        harness.settings_for("actadd", "detox", tiny, {"strength": 2})


@pytest.mark.parametrize("task, rows, message", [
    ("sentiment", [{"prefix": "The weather today"}], "need chat rows"),
    ("truthfulqa", [{"question": "Q?", "best": "A.", "correct": ["A."], "incorrect": ["B."]}], "do not apply"),
])
def test_recontrol_behaviours_that_cannot_apply_are_refused(tiny, task, rows, message):
    with pytest.raises(ValueError, match=message):
        harness.fit_editor(tiny, "recontrol", task, train=rows, cache=False, progress=False,
                           settings={"behaviours": ["You are cheerful."]})


@pytest.mark.parametrize("rows, message", [
    ([{"text": "hi"}], "exactly one of"),
    ([{"prompt": "a", "prefix": "b"}], "exactly one of"),
    ([{"prompt": "  "}], "non-empty"),
])
def test_bad_prompt_rows_are_refused(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        harness.load_items(write_jsonl(tmp_path / "p.jsonl", rows), "detox")


def test_cli_bad_input_exits_nonzero_before_loading_a_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("steerlens.models.load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    good = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    assert main(["eval", "--method", "magic", "--task", "detox", "--prompts", str(good)]) == 2
    assert "Unknown method" in capsys.readouterr().err
    assert main(["eval", "--method", "none", "--task", "poetry", "--prompts", str(good)]) == 2
    assert main(["eval", "--method", "none", "--task", "detox", "--prompts", str(tmp_path / "missing")]) == 2
    assert main(["eval", "--method", "none", "--task", "truthfulqa", "--prompts", str(good)]) == 2
    assert "TruthfulQA column" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["eval", "--method", "none", "--task", "sentiment", "--prompts", str(tmp_path / "empty.jsonl")]) == 2
    assert main(["eval", "--method", "pace", "--task", "detox", "--prompts", str(good), "--set", "positons=all"]) == 2
    assert "pace: unknown setting 'positons'" in capsys.readouterr().err
    assert main(["eval", "--method", "pace", "--task", "detox", "--prompts", str(good), "--set", "alpha"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cli_settings_are_read_as_json_where_they_parse():
    assert parse_settings(["alpha=0.02", "layers=[9, 15]", "positions=generated", "centre=false"]) == {
        "alpha": 0.02, "layers": [9, 15], "positions": "generated", "centre": False}


@pytest.mark.integration
def test_eval_cli_writes_the_json_contract(tmp_path):
    rows = harness.load_items(data_dir() / "sentiment" / "eval.jsonl", "sentiment")
    prompts = write_jsonl(tmp_path / "p.jsonl", [rows[0], rows[-1]])  # one chat prompt, one raw prefix
    assert {"prompt", "prefix"} == {next(iter(r)) for r in [rows[0], rows[-1]]}
    out = tmp_path / "r.json"
    assert main(["eval", "--method", "actadd", "--task", "sentiment", "--prompts", str(prompts),
                 "--max-new-tokens", "6", "--json", str(out), "--set", "alpha=0.5"]) == 0
    r = json.loads(out.read_text())
    assert SCHEMA <= set(r)
    assert r["settings"]["alpha"] == 0.5 and r["settings"]["layers"] == [15]
    assert (r["method"], r["task"], r["n"]) == ("actadd", "sentiment", 2)
    for side in ("steered", "unsteered"):
        assert {"offensive_prob", "vader_compound", "perplexity", "diversity"} <= set(r[side])
        assert len(r["generations"][side]) == 2 and r["seconds"][side] > 0
    assert r["generations"]["steered"] != r["generations"]["unsteered"]


@pytest.mark.integration
def test_training_never_sees_the_evaluated_prompts(model, tmp_path):
    rows = harness.load_items(data_dir() / "detox" / "eval.jsonl", "detox")[:3]
    with pytest.raises(ValueError, match="No training data left"):
        harness.fit_editor(model, "recontrol", "detox", train=rows, exclude=[harness.item_key(r) for r in rows],
                           cache=False)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["none", "prompt", "orthoproj", "pace", "recontrol"])
def test_every_method_runs_on_detox(model, method, monkeypatch, tmp_path):
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))  # fit from scratch, not from a cache
    quick = {"pace": {"n_concepts": 150}, "recontrol": {"samples": 1, "epochs": 2}}.get(method)
    rows = harness.load_items(data_dir() / "detox" / "eval.jsonl", "detox")[:2]
    train = harness.load_items(data_dir() / "detox" / "train.jsonl", "detox")[:4]
    r = harness.evaluate(model, method, "detox", rows, train if method == "recontrol" else None,
                         max_new_tokens=5, settings=quick, progress=False)
    assert r["n"] == 2 and len(r["generations"]["steered"]) == 2
    if method == "pace":  # the result records the method's settings, not only the editor's
        assert (r["settings"]["stimuli"], r["settings"]["expand"], r["settings"]["n_concepts"]) == ("model", 25, 150)
    if method == "none":
        assert r["generations"]["steered"] == r["generations"]["unsteered"]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["actadd", "recontrol"])
def test_truthfulqa_eval_on_held_out_questions(model, method, monkeypatch, tmp_path):
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    rows = load_truthfulqa(truthfulqa_dev_path())
    quick = {"epochs": 2} if method == "recontrol" else None
    r = harness.evaluate(model, method, "truthfulqa", rows[:2], rows[2:10], settings=quick, progress=False)
    assert set(r["steered"]) == {"mc1", "mc2"} and 0 <= r["steered"]["mc2"] <= 1
    assert r["generations"] == {"steered": [], "unsteered": []}


def test_a_users_training_data_does_not_read_the_shipped_data(tmp_path, monkeypatch, tiny):
    """--train my.jsonl keys the cache on the user's data alone: the shipped folder is not even read (it was
    hashed on every fit, which failed wherever the shipped data could not be found)."""
    def unavailable():
        raise FileNotFoundError("no shipped data here")

    monkeypatch.setattr(harness, "data_dir", unavailable)
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path / "cache"))
    train = [{"prompt": "Say hello."}, {"prefix": "Once upon a time"}]
    harness.fit_editor(tiny, "none", "detox", train=train, progress=False)
    with pytest.raises(FileNotFoundError):
        harness.fit_editor(tiny, "none", "detox", progress=False)  # shipped data: read, and missing here


def test_the_data_digest_covers_only_what_a_task_can_read(tmp_path, monkeypatch):
    for folder in ("concepts", "sentiment", "detox", "pairs"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.jsonl").write_text("{}\n")
    monkeypatch.setattr(harness, "data_dir", lambda: tmp_path)
    before = {t: harness._shipped_data_digest(t) for t in ("sentiment", "detox")}
    (tmp_path / "detox" / "more.jsonl").write_text('{"prefix": "x"}\n')  # data added for detox only
    assert harness._shipped_data_digest("sentiment") == before["sentiment"]
    assert harness._shipped_data_digest("detox") != before["detox"]
    (tmp_path / "pairs" / "a.jsonl").write_text('{"positive": "a", "negative": "b"}\n')  # read by every task
    assert harness._shipped_data_digest("sentiment") != before["sentiment"]


@pytest.mark.integration
def test_pace_partitions_from_the_classifier(model):
    """partition=classifier marks exactly the concepts whose stimuli the classifier scores above 0.5 (the
    shipped dictionary, expand 0); union holds the curated concepts and those."""
    from steerlens.evaluation import offensive_prob
    from steerlens.methods.pace import concept_scores, stimuli_texts, tagged_concepts

    def undesirable(editor):
        s = editor.settings
        return {c for c, u in zip(s["concepts"], editor.tensors["undesirable"].tolist(), strict=True) if u}

    scores = concept_scores(stimuli_texts("model"), offensive_prob)
    expected = {c for c, v in scores.items() if v > 0.5}
    clf = harness.fit_editor(model, "pace", "detox", settings={"partition": "classifier", "expand": 0},
                             cache=False, progress=False)
    assert undesirable(clf) == expected and 5 <= len(expected) < 200
    union = harness.fit_editor(model, "pace", "detox", settings={"partition": "union", "expand": 0},
                               cache=False, progress=False)
    curated = set(tagged_concepts("toxicity")) & set(union.settings["concepts"])
    assert undesirable(union) == expected | curated
    with pytest.raises(ValueError, match="'partition' = \"llm\" is not allowed: it must be one of \"curated\""):
        harness.fit_editor(model, "pace", "detox", settings={"partition": "llm"}, cache=False, progress=False)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["sea", "actadd"])
def test_bias_eval_reports_bbq_metrics(model, method, monkeypatch, tmp_path):
    """`steerlens eval --task bias`: fitted on training items, scored per condition as BBQ does; the unsteered
    scores are cached by content, so the second method does not score the unsteered model again."""
    from steerlens.bias import load_bias

    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    train = load_bias(data_dir() / "bias" / "train.jsonl")[:24]
    rows = load_bias(data_dir() / "bias" / "dev.jsonl")[:8]
    r = harness.evaluate(model, method, "bias", rows, train, settings={"layers": [28, 29]}, progress=False)
    assert set(r["steered"]) == set(harness.BIAS_METRICS) and 0 <= r["steered"]["accuracy"] <= 1
    assert list((tmp_path / "scores").glob("bias-*.json"))  # the unsteered scores, kept
    again = harness.measure(model, "bias", rows, None, progress=False)
    assert again["metrics"] == r["unsteered"]


def test_cli_refuses_a_malformed_bias_file_before_loading_a_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("steerlens.models.load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    bad = write_jsonl(tmp_path / "b.jsonl", [{"context": "A and B met.", "question": "Who?", "answers": ["A", "B"],
                                             "label": 0, "condition": "ambiguous", "polarity": "negative",
                                             "target": 0}])
    assert main(["eval", "--method", "sea", "--task", "bias", "--prompts", str(bad)]) == 2
    assert "three non-empty strings" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no recipe for task 'bias'"):
        harness.settings_for("pace", "bias", None)
