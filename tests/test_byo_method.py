"""Bring your own method: an editor written outside steerlens runs, with steerlens unchanged, through eval, sweep
(with its control), run_methods, compare_edits and divergence_trace; by file path, by module, by class, and
through an installed package's entry point. The shared tools name no method, and the package has no import
circle."""

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import steerlens
from steerlens.editing import REGISTRY, Editor

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "steerlens"
README = ROOT / "README.md"


def readme_example() -> str:
    """The README's "your own method" example (the code block between its markers)."""
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- byo-example:start -->", 1)[1].split("<!-- byo-example:end -->", 1)[0]
    return block.split("```python", 1)[1].rsplit("```", 1)[0]


def method_source() -> str:
    """The example's class (everything before it loads a model)."""
    return readme_example().split("\nmodel = ", 1)[0]


# -- the shared tools know no method by name ---------------------------------------------------------------
SHARED = ("harness.py", "sweep.py", "bench.py", "demo.py")
# "none" and "prompt" are also ordinary words of the data format (a row's "prompt"), so they cannot be told
# apart from a method's name by reading the code; every other registered name must not appear.
DATA_WORDS = {"none", "prompt"}


def names_a_method(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    methods = {name for name in REGISTRY if name not in DATA_WORDS}
    classes = {cls.__name__ for cls in REGISTRY.values()}
    found = []
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words = set(re.findall(r"[a-z_]+", node.value))
            found += [f"string {node.value!r}" for w in words & methods]
        elif isinstance(node, ast.Name | ast.alias) and (getattr(node, "id", None) or node.name) in classes:
            found.append(f"name {getattr(node, 'id', None) or node.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and re.match(r"(steerlens\.)?methods\.", node.module):
            found.append(f"import from {node.module}")
    return found


@pytest.mark.parametrize("module", SHARED)
def test_the_shared_tools_name_no_method(module):
    assert names_a_method(PACKAGE / module) == []


def test_the_name_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""Docstrings may say pace."""\n'
                   'if method == "pace":\n    from .methods.sea import SpectralEditor\n')
    assert sorted(names_a_method(bad)) == ["import from methods.sea", "name SpectralEditor", "string 'pace'"]


# -- no import circle ---------------------------------------------------------------------------------------
def import_graph() -> dict[str, set[str]]:
    """``steerlens`` module -> the steerlens modules it imports (at any depth of the file, lazy imports
    included; ``if TYPE_CHECKING`` blocks left out)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = name if rel.name == "__init__" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = {id(n) for i in ast.walk(tree) if isinstance(i, ast.If) and "TYPE_CHECKING" in ast.unparse(i.test)
                for n in ast.walk(i)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("steerlens"):
                    continue
                # "from . import methods" imports a submodule
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                             or (PACKAGE.parent / Path(*sub.split("."))).is_dir() else target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("steerlens")}
        graph[name] = {d for d in deps if d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m.endswith("__init__") or m == "steerlens":
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if state.get(m) is None:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if state.get(n) is None:
            found = visit(n)
            if found:
                return found
    return None


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "steerlens.context" in graph["steerlens.generation"] and "steerlens.context" in graph["steerlens.editing"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_circle_check_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


# -- resolving methods ----------------------------------------------------------------------------------------
def write_method(tmp_path: Path) -> Path:
    path = tmp_path / "my_methods.py"
    path.write_text(method_source(), encoding="utf-8")
    return path


def test_a_method_by_file_module_and_class(tmp_path, monkeypatch):
    from steerlens.editing import resolve_method

    path = write_method(tmp_path)
    cls = resolve_method(f"{path}:MeanCentring")
    assert issubclass(cls, Editor) and cls.method == "meancentre" and REGISTRY["meancentre"] is cls
    assert resolve_method(cls) is cls and resolve_method("meancentre") is cls
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="Another editor class is registered as 'meancentre'"):
        resolve_method("my_methods:MeanCentring")  # the same code imported again is another class
    with pytest.raises(ValueError, match="has no 'Nope'"):
        resolve_method(f"{path}:Nope")
    with pytest.raises(ValueError, match="No Python file"):
        resolve_method(f"{tmp_path / 'missing.py'}:MeanCentring")
    with pytest.raises(ValueError, match="Cannot import module 'no_such_module_xyz'"):
        resolve_method("no_such_module_xyz:Thing")
    with pytest.raises(ValueError, match="Unknown method 'nope'"):
        resolve_method("nope")
    with pytest.raises(ValueError, match="not a steerlens Editor"):
        resolve_method(f"{path}:Setting")
    REGISTRY.pop("meancentre")


def test_settings_of_an_outside_method_are_checked(tmp_path):
    from steerlens.editing import resolve_method
    from steerlens.harness import settings_for
    from steerlens.settings import SettingError

    cls = resolve_method(f"{write_method(tmp_path)}:MeanCentring")
    try:
        assert settings_for(cls, "sentiment", None, {"alpha": 2}) == {"layers": [15], "alpha": 2.0}
        with pytest.raises(SettingError, match="meancentre: setting 'alpha' = -1.0 is not allowed"):
            settings_for(cls, "sentiment", None, {"alpha": -1.0})
        with pytest.warns(UserWarning, match="alpha=9 is legal but extreme"):
            settings_for(cls, "sentiment", None, {"alpha": 9})
    finally:
        REGISTRY.pop("meancentre")


# -- end to end on a model ------------------------------------------------------------------------------------
@pytest.mark.integration
def test_an_outside_method_runs_through_every_tool(tiny_chat, tmp_path, monkeypatch):
    """The README's MeanCentring, in a file outside the package, through sweep --control (the CLI, on a tiny
    model with the real tokenizer), run_methods, evaluate with a fitted editor, compare_edits and
    divergence_trace; saved and loaded back by its name."""
    from steerlens import analysis, cli, models
    from steerlens.harness import evaluate, fit_editor
    from steerlens.sweep import run_methods

    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "load_model", lambda **k: tiny_chat)
    path = write_method(tmp_path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Describe a rainy day."}\n{"prefix": "The bus was late and"}\n')
    try:
        out = tmp_path / "sweep"
        assert cli.main(["sweep", "--method", f"{path}:MeanCentring", "--task", "sentiment", "--prompts",
                         str(prompts), "--sweep", "alpha=1,2", "--control", "--max-new-tokens", "3", "--out", str(out),
                         "--quiet"]) == 0
        result = json.loads((out / "sweep.json").read_text())
        assert result["method"] == "meancentre" and [r["value"] for r in result["rows"]] == [1.0, 2.0]
        assert all("control" in r for r in result["rows"])
        assert len(list((tmp_path / "cache" / "editors").glob("meancentre-sentiment-*"))) == 2

        rows = [json.loads(x) for x in prompts.read_text().splitlines()]
        cls = REGISTRY["meancentre"]
        table = run_methods(tiny_chat, [cls, "actadd"], "sentiment", rows, max_new_tokens=3, progress=False)
        assert [r["value"] for r in table["rows"]] == ["meancentre", "actadd"]

        editor = fit_editor(tiny_chat, cls, "sentiment", progress=False)
        assert editor.layers == [2] and set(editor.tensors) == {"vector.2", "sink_norm.2"}
        r = evaluate(tiny_chat, editor, "sentiment", rows, max_new_tokens=3, progress=False)
        assert r["method"] == "meancentre" and r["steered"]["length"] > 0

        comparison = analysis.compare_edits(tiny_chat, {"mine": editor}, "The bus was late and I")
        assert comparison.names == ["mine"] and comparison.sizes[0, 2].sum() > 0 and comparison.kl[0].sum() > 0
        trace = analysis.divergence_trace(tiny_chat, editor, "Describe a rainy day.", max_new_tokens=3)
        assert len(trace.steered) == 3 and trace.kl.shape[0] == 3 and trace.hooks == ["blocks.2.hook_resid_post"]

        loaded = Editor.load(editor.save(tmp_path / "saved"), model=tiny_chat)
        assert type(loaded) is cls and loaded.settings == editor.settings
    finally:
        REGISTRY.pop("meancentre", None)


TOY_PACKAGE = '''
from steerlens.editing import Editor, ModelSpec, TensorSpec
from steerlens.settings import Setting


class Shift(Editor):
    """Adds alpha times a fixed basis vector (a toy installed through an entry point)."""

    method = "toyshift"
    settings_spec = (Setting("layers", "layers", [15], "edited layers", saved=False),
                     Setting("alpha", "float", 0.5, "size of the shift", low=0))
    tensor_spec = (TensorSpec("vector.{L}", ("d_model",)),)

    @classmethod
    def for_task(cls, model, task, settings):
        import torch

        d = model.cfg.d_model
        tensors = {f"vector.{la}": torch.eye(d)[0] for la in settings["layers"]}
        return cls(model=ModelSpec.of(model), layers=settings["layers"], settings={"alpha": settings["alpha"]},
                   tensors=tensors)

    def hook_fn(self, layer):
        v = self.tensors[f"vector.{layer}"]
        return lambda act, hook: act + self.settings["alpha"] * v.to(act.dtype)
'''


def install_toy_package(where: Path) -> None:
    """An installed distribution, as pip leaves it: the package and its ``.dist-info`` with the entry point."""
    (where / "toy_steer").mkdir(parents=True)
    (where / "toy_steer" / "__init__.py").write_text(TOY_PACKAGE)
    info = where / "toy_steer-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-steer\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[steerlens.methods]\ntoyshift = toy_steer:Shift\n")
    (info / "RECORD").write_text("")


@pytest.mark.integration
def test_an_installed_package_registers_its_editor_by_entry_point(tmp_path):
    """``steerlens methods`` lists it and ``steerlens eval --method toyshift`` runs it, on the real model."""
    install_toy_package(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    listed = subprocess.run([sys.executable, "-m", "steerlens.cli", "methods"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "toyshift  (toy_steer.Shift)" in listed.stdout and "alpha" in listed.stdout
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Tell me about your cat."}\n')
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, "-m", "steerlens.cli", "eval", "--method", "toyshift", "--task",
                          "sentiment", "--prompts", str(prompts), "--max-new-tokens", "4", "--set", "alpha=2",
                          "--json", str(out), "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["method"] == "toyshift" and result["settings"]["alpha"] == 2.0 and result["n"] == 1


@pytest.mark.integration
def test_the_readme_example_runs(model, monkeypatch):
    from steerlens import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: model)
    monkeypatch.setattr(steerlens, "load_model", lambda *a, **k: model)
    scope: dict = {}
    try:
        exec(compile(textwrap.dedent(readme_example()), "README.md", "exec"), scope)
        rows = scope["result"]["rows"]
        assert [r["value"] for r in rows] == ["meancentre", "actadd"]
        assert all(r["perplexity_ratio"] > 0 for r in rows)
    finally:
        REGISTRY.pop("meancentre", None)


def test_a_broken_outside_method_is_refused_in_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from steerlens import cli, models

    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load_model", refuse)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    broken = tmp_path / "broken.py"
    broken.write_text("class Oops(:\n")
    no_recipe = tmp_path / "no_recipe.py"
    no_recipe.write_text("from steerlens.editing import Editor\n\nclass Bare(Editor):\n    method = 'bare_toy'\n")
    no_name = tmp_path / "no_name.py"
    no_name.write_text("from steerlens.editing import Editor\n\nclass Nameless(Editor):\n    pass\n")
    cases = {f"{broken}:Oops": "could not be imported: SyntaxError",
             f"{no_recipe}:Bare": "Bare ('bare_toy') has no task recipe: define the classmethod for_task",
             f"{no_name}:Nameless": "Nameless must set a class attribute `method`"}
    try:
        for method, message in cases.items():
            assert cli.main(["eval", "--method", method, "--task", "sentiment", "--prompts", str(prompts)]) == 2
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, err
    finally:
        REGISTRY.pop("bare_toy", None)
