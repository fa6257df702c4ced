"""Checked at the door: every setting typed (``--set``, ``--sweep``, ``fit`` keywords, ``editor.json``, the cache
key), every saved editor matched to its method's declared tensors, every missing extra named before any work.

The three doors of issue 37, each with the test that failed on the main before it (the fix is named):
1. ``--set alpha=abc`` / ``alpha=nan`` were fitted, cached and crashed in generation:
   ``test_cli_refuses_bad_values_before_the_model_loads_and_caches_nothing``.
2. A saved ActAdd relabelled ``pace`` loaded as a PaCEEditor: ``test_a_method_swapped_folder_is_refused``.
3. ``steerlens eval`` generated everything, then died on ``profanity_check``:
   ``test_missing_evaluators_are_named_before_the_model_loads``.
"""

import json
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from steerlens import cli, harness, models
from steerlens.editing import REGISTRY, Editor, ModelSpec
from steerlens.methods import ActAdd, OrthoProj, PaCEEditor, SpectralEditor
from steerlens.settings import ExtremeSettingWarning, Setting, SettingError, check_settings, parse_value

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TASKS = ("detox", "sentiment", "truthfulqa")


class ModelLoaded(Exception):
    pass


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load the model raises: what runs before it is what the tests see."""
    def refuse(*a, **k):
        raise ModelLoaded
    monkeypatch.setattr(models, "load_model", refuse)


# -- the declaration itself ----------------------------------------------------------------------------------
class TestSetting:
    def test_types_ranges_and_canonical_values(self):
        f = Setting("a", "float", 0.3, low=0.0, high=1.0, open_low=True)
        assert f.check(1) == 1.0 and isinstance(f.check(1), float)
        for bad in ("abc", float("nan"), float("inf"), 0.0, 1.5, True, [0.5], None):
            with pytest.raises(SettingError, match="setting 'a' = .* is not allowed: it must be a finite number > 0"):
                f.check(bad)
        i = Setting("n", "int", 3, low=1)
        assert i.check(4.0) == 4 and isinstance(i.check(4.0), int)
        for bad in (2.5, 0, "3", False):
            with pytest.raises(SettingError):
                i.check(bad)
        assert Setting("m", "float", None, optional=True).check(None) is None
        c = Setting("p", "str", "all", choices=("all", "prompt"))
        with pytest.raises(SettingError, match='one of "all", "prompt"'):
            c.check("last")
        lay = Setting("layers", "layers", [15])
        assert lay.check(15) == [15] and lay.check([21, 9, 9]) == [9, 21]
        for bad in ([], [30], [-1], ["9"], [True], 1.5):
            with pytest.raises(SettingError, match="layer indices 0-29"):
                lay.check(bad)
        b = Setting("centre", "bool", True)
        with pytest.raises(SettingError, match="true or false"):
            b.check(1)

    def test_unknown_names_and_extreme_values(self):
        spec = (Setting("alpha", "float", 0.3, extreme=1.0, extreme_note="bigger than the activation"),)
        with pytest.raises(SettingError, match="m: unknown setting 'alhpa'; known: alpha"):
            check_settings(spec, {"alhpa": 1}, "m")
        with pytest.warns(ExtremeSettingWarning, match="alpha=1e\\+09 is legal but extreme .*bigger than"):
            assert check_settings(spec, {"alpha": 1e9}, "m") == {"alpha": 1e9}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_settings(spec, {"alpha": -0.5}, "m")

    def test_parse_value(self):
        assert parse_value("0.5") == 0.5 and parse_value("[9,15]") == [9, 15] and parse_value("true") is True
        assert parse_value("generated") == "generated" and parse_value("null") is None
        assert math.isnan(parse_value("NaN")) and parse_value("1e400") == float("inf")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_declares_its_settings_and_its_defaults_pass(name):
    cls = REGISTRY[name]
    if name == "random-direction":
        pytest.skip("a control wrapped around a live editor, never fitted for a task")
    assert cls.settings_spec is not None and cls.tensor_spec is not None
    for s in cls.settings_spec:
        assert s.help or not s.recipe, f"{name}.{s.name} has no help"
    for task in cls.tasks or TASKS:
        defaults = cls.task_settings(task)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no default is extreme
            assert cls.task_settings(task, defaults) == defaults  # they pass their own declaration unchanged


# -- door 1: settings -----------------------------------------------------------------------------------------
def eval_args(prompts, *sets, method="actadd", task="sentiment"):
    out = ["eval", "--method", method, "--task", task, "--prompts", str(prompts)]
    for s in sets:
        out += ["--set", s]
    return out


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hello"}\n')
    return path


def test_cli_refuses_bad_values_before_the_model_loads_and_caches_nothing(prompts, tmp_path, monkeypatch,
                                                                          no_model, capsys):
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path / "cache"))
    cases = {"alpha=abc": "'alpha' = \"abc\"", "alpha=nan": "'alpha' = \"nan\"", "alpha=NaN": "'alpha' = NaN",
             "alpha=Infinity": "'alpha' = Infinity", "alpha=[1,2]": "'alpha' = [1, 2]",
             "layers=[40]": "'layers' = [40]", "alpha=true": "'alpha' = true"}
    for value, shown in cases.items():
        assert cli.main(eval_args(prompts, value)) == 2, value
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"steerlens eval: error: actadd: setting {shown} is not allowed: it must be" in err, err
    assert cli.main(eval_args(prompts, "positions=last", method="pace", task="detox")) == 2
    assert "must be one of \"all\", \"prompt\", \"generated\"" in capsys.readouterr().err
    assert cli.main(["sweep", "--method", "actadd", "--task", "detox", "--prompts", str(prompts),
                     "--sweep", "alpha=0.1,abc"]) == 2
    assert "'alpha' = \"abc\"" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # nothing was fitted, nothing cached


def test_cli_warns_on_an_extreme_value_and_goes_on(prompts, no_model):
    with pytest.warns(ExtremeSettingWarning, match="alpha=1e\\+09 is legal but extreme"):
        with pytest.raises(ModelLoaded):  # accepted: the model would load next
            cli.main(eval_args(prompts, "alpha=1e9"))


def test_fit_keywords_are_checked_before_fitting(monkeypatch):
    from steerlens.methods import baselines

    def collect(*a, **k):
        raise AssertionError("fitted with a bad setting")
    monkeypatch.setattr(baselines, "collect_activations", collect)
    for kw, what in (({"alpha": "abc"}, "'alpha' = \"abc\""), ({"alpha": float("nan")}, "'alpha' = NaN"),
                     ({"position": "first"}, "'position' = \"first\"")):
        with pytest.raises(SettingError, match=f"actadd: setting {what} is not allowed"):
            ActAdd.fit(object(), ["a"], ["b"], layers=[0], **kw)
    with pytest.raises(SettingError, match="sea: setting 'k_pos' = 1.5"):
        SpectralEditor.fit_activations(ModelSpec("m", 4, 1), {}, [0], k_pos=1.5)
    with pytest.raises(SettingError, match="'feature_map' = \"cosh\""):
        SpectralEditor.fit_activations(ModelSpec("m", 4, 1), {}, [0], feature_map="cosh")


def actadd(d=8, alpha=0.3):
    return ActAdd(model=ModelSpec("m", d, 2), layers=[1], settings={"alpha": alpha, "position": "mean"},
                  tensors={"vector.1": torch.randn(d), "sink_norm.1": torch.tensor(50.0)})


def test_an_editor_cannot_be_made_or_loaded_with_bad_settings(tmp_path):
    with pytest.raises(SettingError, match="actadd: setting 'alpha' = \"abc\""):
        actadd(alpha="abc")
    path = actadd().save(tmp_path / "a")
    for bad in ("abc", None, float("nan"), [1]):
        meta = json.loads((path / "editor.json").read_text())
        meta["settings"]["alpha"] = bad
        (path / "editor.json").write_text(json.dumps(meta))
        with pytest.raises(SettingError, match=f"{path / 'editor.json'}: actadd: setting 'alpha'"):
            Editor.load(path)
    meta["settings"] = {"alpha": 0.3, "position": "mean", "strength": 2}
    (path / "editor.json").write_text(json.dumps(meta))
    with pytest.raises(SettingError, match="unknown saved setting 'strength'"):
        Editor.load(path)


@pytest.mark.integration  # the tiny model with the real tokenizer
def test_a_cache_entry_with_bad_settings_is_refitted_not_trusted(tiny_chat, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    first = harness.fit_editor(tiny_chat, "actadd", "sentiment", settings={"alpha": 0.2}, progress=False)
    (entry,) = (tmp_path / "editors").glob("actadd-sentiment-*")
    meta = json.loads((entry / "editor.json").read_text())
    meta["settings"]["alpha"] = "abc"
    (entry / "editor.json").write_text(json.dumps(meta))
    again = harness.fit_editor(tiny_chat, "actadd", "sentiment", settings={"alpha": 0.2}, progress=False)
    assert again.settings["alpha"] == 0.2
    torch.testing.assert_close(again.tensors["vector.2"], first.tensors["vector.2"])
    assert json.loads((entry / "editor.json").read_text())["settings"]["alpha"] == 0.2
    # equal settings written two ways share one entry
    harness.fit_editor(tiny_chat, "actadd", "sentiment", settings={"alpha": 0.2, "layers": 15}, progress=False)
    assert len(list((tmp_path / "editors").glob("actadd-sentiment-*"))) == 1


# -- door 2: tensors ------------------------------------------------------------------------------------------
def saved_editors(tmp_path, d=8):
    """One saved folder per method that stores tensors, made without a model."""
    g = torch.Generator().manual_seed(0)
    spec = ModelSpec("m", d, 2)
    eds = {"actadd": actadd(d),
           "orthoproj": OrthoProj(model=spec, layers=[1], settings={"position": "mean"},
                                  tensors={"basis.1": torch.linalg.qr(torch.randn(d, 1, generator=g))[0]}),
           "pace": PaCEEditor(model=spec, layers=[1], settings={"alpha": 0.05, "l1_ratio": 0.95, "solver": "enet",
                                                                "n_nonzero": 4, "task": "t", "concepts": list("abcd"),
                                                                "centre": False, "positions": "all"},
                              tensors={"atoms.1": torch.nn.functional.normalize(torch.randn(d, 4, generator=g), dim=0),
                                       "undesirable": torch.tensor([False, True, False, False])})}
    h = {w: {1: torch.randn(12, d, generator=g)} for w in ("neutral", "positive", "negative")}
    eds["sea"] = SpectralEditor.fit_activations(spec, h, [1], k_pos=0.9, k_neg=0.9)
    return {name: ed.save(tmp_path / name) for name, ed in eds.items()}


def test_a_method_swapped_folder_is_refused(tmp_path):
    folders = saved_editors(tmp_path)
    for name, path in folders.items():
        assert type(Editor.load(path)).method == name
        for other in ("actadd", "orthoproj", "pace", "sea", "recontrol"):
            if other == name:
                continue
            meta = json.loads((path / "editor.json").read_text())
            meta["method"] = other
            (path / "editor.json").write_text(json.dumps(meta))
            with pytest.raises(ValueError, match=f"{path}.*{other}") as e:
                Editor.load(path)
            assert "\n" not in str(e.value)
        meta["method"] = name
        (path / "editor.json").write_text(json.dumps(meta))
    # the tensors alone decide, when the settings happen to fit both methods
    path = folders["actadd"]
    meta = json.loads((path / "editor.json").read_text())
    meta["method"], meta["settings"] = "orthoproj", {"position": "mean"}
    (path / "editor.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit a 'orthoproj' editor: missing basis.1; unexpected vector.1"):
        Editor.load(path)


def test_shapes_and_names_are_checked(tmp_path):
    path = saved_editors(tmp_path)["pace"]
    tensors = load_file(str(path / "tensors.safetensors"))
    cases = {"undesirable": ({**tensors, "undesirable": torch.tensor([True, False])}, "undesirable has shape \\(2,\\)"),
             "dtype": ({**tensors, "undesirable": torch.ones(4)}, "undesirable has dtype torch.float32, not bool"),
             "missing": ({k: v for k, v in tensors.items() if k != "atoms.1"}, "missing atoms.1"),
             "extra": ({**tensors, "atoms.0": tensors["atoms.1"].clone()}, "not among the editor's layers")}
    for bad, message in cases.values():
        save_file(bad, str(path / "tensors.safetensors"))
        with pytest.raises(ValueError, match=message):
            Editor.load(path)


# -- door 3: extras -------------------------------------------------------------------------------------------
def test_missing_evaluators_are_named_before_the_model_loads(prompts, monkeypatch, no_model, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "profanity_check" else real(name, *a))
    for args in (eval_args(prompts), ["sweep", "--method", "actadd", "--task", "detox", "--prompts", str(prompts),
                                      "--sweep", "alpha=0.1"], ["bench", "--tasks", "detox"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and 'pip install "steerlens[eval]"' in err and "alt-profanity-check" in err
    csv = prompts.with_name("q.csv")  # TruthfulQA is scored by log-probabilities: no evaluator needed
    csv.write_text("Question,Best Answer,Correct Answers,Incorrect Answers\nIs the sky green?,No,No; It is blue,Yes\n")
    with pytest.raises(ModelLoaded):
        cli.main(eval_args(csv, task="truthfulqa"))


# -- property tests -------------------------------------------------------------------------------------------
keys = st.sampled_from(sorted({s.name for c in REGISTRY.values() for s in (c.settings_spec or ())} | {"bogus"}))
raw = st.one_of(st.text(max_size=12), st.sampled_from(["nan", "NaN", "Infinity", "-Infinity", "1e400", "-1", "0",
                                                       "1e9", "[]", "[1, 2]", "[15]", "null", "true", "{}", "\"x\"",
                                                       "ünïcødé", "0.5", "3", "[9,15]", "last", "all"]))
python_values = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(), st.text(max_size=8),
                          st.lists(st.integers(-5, 40), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                      max_size=2))
methods = st.sampled_from(sorted(m for m in REGISTRY if m != "random-direction"))


def _allowed(s: Setting, v) -> bool:
    """What each declared setting admits, written out independently of ``Setting.check``."""
    if v is None:
        return s.optional
    if s.choices is not None:
        return v in s.choices
    number = isinstance(v, int | float) and not isinstance(v, bool)
    if s.type in ("float", "int"):
        return (number and math.isfinite(v) and (s.type == "float") == isinstance(v, float)
                and (s.low is None or v > s.low or (v == s.low and not s.open_low))
                and (s.high is None or v <= s.high))
    return {"bool": lambda: isinstance(v, bool),
            "str": lambda: isinstance(v, str) and bool(v.strip()),
            "layers": lambda: isinstance(v, list) and bool(v) and all(isinstance(x, int) and 0 <= x < 30 for x in v),
            "strings": lambda: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "object": lambda: isinstance(v, dict)}[s.type]()


def _valid(cls, task, out):
    json.dumps(out, allow_nan=False)  # a cache key can be made; no NaN or infinity inside
    declared = {s.name: s for s in cls.settings_spec}
    assert set(out) == {n for n, s in declared.items() if s.recipe}
    bad = {n: v for n, v in out.items() if not _allowed(declared[n], v)}
    assert bad == {}
    assert cls.task_settings(task, out) == out


@FAST
@given(method=methods, task=st.sampled_from(TASKS), key=keys, value=raw)
def test_random_set_strings_give_a_one_line_refusal_or_valid_settings(method, task, key, value):
    cls = REGISTRY[method]
    try:
        overrides = cli.parse_settings([f"{key}={value}"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtremeSettingWarning)
            out = harness.settings_for(method, task, None, overrides)
    except ValueError as e:
        assert "\n" not in str(e) and str(e)
        return
    _valid(cls, task, out)


@FAST
@given(method=methods, task=st.sampled_from(TASKS), key=keys, value=python_values)
def test_random_python_values_give_a_refusal_or_valid_settings(method, task, key, value):
    cls = REGISTRY[method]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtremeSettingWarning)
            out = cls.task_settings(task, {key: value})
    except SettingError as e:
        assert "\n" not in str(e)
        return
    _valid(cls, task, out)


@FAST
@given(method=st.sampled_from(["actadd", "orthoproj", "pace", "sea"]), data=st.data())
def test_random_edits_of_a_saved_folder_are_refused_or_load_an_editor_that_runs(tmp_path_factory, method, data):
    path = saved_editors(tmp_path_factory.mktemp("e"))[method]
    meta = json.loads((path / "editor.json").read_text())
    tensors = load_file(str(path / "tensors.safetensors"))
    edit = data.draw(st.sampled_from(["method", "setting", "drop", "rename", "reshape"]))
    if edit == "method":
        meta["method"] = data.draw(st.sampled_from(sorted(REGISTRY) + ["nope"]))
    elif edit == "setting":
        meta["settings"][data.draw(keys)] = data.draw(python_values)
    elif edit == "drop" and tensors:
        tensors.pop(data.draw(st.sampled_from(sorted(tensors))))
    elif edit == "rename" and tensors:
        old = data.draw(st.sampled_from(sorted(tensors)))
        tensors[data.draw(st.sampled_from(["vector.1", "basis.1", "atoms.1", "u_pos.1", "gain", "x", "atoms.0"]))] = \
            tensors.pop(old)
    elif tensors:
        name = data.draw(st.sampled_from(sorted(tensors)))
        tensors[name] = torch.randn(*[s + 1 for s in tensors[name].shape]) if tensors[name].dim() else torch.randn(2)
    try:
        (path / "editor.json").write_text(json.dumps(meta))
    except ValueError:  # NaN in JSON is allowed by json.dumps; nothing to catch here normally
        return
    save_file(tensors, str(path / "tensors.safetensors"))
    try:
        editor = Editor.load(path)
    except ValueError as e:
        assert "\n" not in str(e)
        return
    act = torch.randn(1, 3, 8)
    for _, fn in editor.fwd_hooks():
        out = fn(act, None)
        assert out.shape == act.shape and torch.isfinite(out).all()
