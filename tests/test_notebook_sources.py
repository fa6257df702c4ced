"""The notebooks come from one readable source per lesson (notebooks/src/*.py, built by tools/make_notebooks.py):
the committed solution notebooks and exercise variants must match it, and the check that says so
must catch a difference."""

import importlib.util
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mn():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebooks_match_their_source(mn):
    assert mn.check() == []


def test_solution_notebooks_are_committed_executed(mn):
    for name in mn.NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), f"{name} is not committed executed"
        assert not any(o.output_type == "error" for c in code for o in c.outputs), f"{name} has an error output"


def test_the_check_catches_an_edited_cell_and_a_stray_notebook(mn, tmp_path, monkeypatch):
    copy = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", copy)
    monkeypatch.setattr(mn, "ROOT", copy)
    monkeypatch.setattr(mn, "EXERCISES", copy / "exercises")
    assert mn.check() == []
    path = copy / "07_pitfalls.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source += "\nprint('edited by hand')"
    nbformat.write(nb, path)
    (copy / "exercises" / "stray.ipynb").write_text((copy / "exercises" / "07_pitfalls.ipynb").read_text())
    problems = mn.check()
    assert any("07_pitfalls.ipynb differs" in p for p in problems)
    assert any("stray.ipynb has no source" in p for p in problems)


def test_exercise_variant_blanks_the_code_and_folds_the_solution(mn):
    cells = mn.NOTEBOOKS["07_pitfalls.ipynb"]
    solution, exercise = mn.build(cells, "solution"), mn.build(cells, "exercise")
    n_ex = sum(kind == "exercise" for kind, *_ in cells)
    assert n_ex >= 2
    assert len(exercise.cells) == len(solution.cells) + n_ex  # one folded solution per exercise
    assert sum("# your code here" in c.source for c in exercise.cells if c.cell_type == "code") == n_ex
    assert not any("# your code here" in c.source for c in solution.cells)
    folded = [c.source for c in exercise.cells if c.cell_type == "markdown" and c.source.startswith("<details>")]
    assert len(folded) == n_ex and all("def " in f for f in folded)


def test_every_exercise_shows_a_rating_and_a_folded_hint_in_both_variants(mn):
    for name, cells in mn.NOTEBOOKS.items():
        n_ex = sum(kind == "exercise" for kind, *_ in cells)
        for variant in ("solution", "exercise"):
            nb = mn.build(cells, variant)
            ratings = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("Difficulty ")]
            assert len(ratings) == n_ex, (name, variant)
            assert all("Importance " in r.source and "<summary>Hint</summary>" in r.source for r in ratings)
    with pytest.raises(ValueError, match="rated"):
        mn.build([("exercise", "x = 1", "x = ...")], "solution")
    with pytest.raises(ValueError, match="1-3"):
        mn.rated(4, 1, "a hint")
    with pytest.raises(ValueError, match="1-3"):
        mn.rated(1, 1, " ")


def test_every_lesson_asks_a_prediction_with_its_answer_folded(mn):
    for name, cells in mn.NOTEBOOKS.items():
        text = [c.source for c in mn.build(cells, "solution").cells if c.cell_type == "markdown"]
        asks = [t for t in text if "**Predict" in t]
        assert asks, f"{name} has no prediction question"
        assert all("<details><summary>Answer" in t for t in asks), f"{name}: a prediction's answer is not folded"


def test_quoted_numbers_are_bound_to_the_run_and_the_check_catches_an_edit(mn):
    for name in mn.NOTEBOOKS:
        assert mn.unbound_claims(name, nbformat.read(ROOT / "notebooks" / name, as_version=4)) == []
    nb = nbformat.read(ROOT / "notebooks" / "01_steering_vectors.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "markdown" and "What to see" in c.source and "+0.42" in c.source)
    cell.source = cell.source.replace("+0.42", "+0.47", 1)  # a figure edited by hand, no longer the run's
    assert any("+0.47" in p for p in mn.unbound_claims("01_steering_vectors.ipynb", nb))
    nb = nbformat.read(ROOT / "notebooks" / "02_sea.ipynb", as_version=4)
    mn.QUOTED_ELSEWHERE["02_sea.ipynb"].pop("+4.4")
    try:
        assert any("+4.4" in p for p in mn.unbound_claims("02_sea.ipynb", nb))  # a source must be named
    finally:
        mn.QUOTED_ELSEWHERE["02_sea.ipynb"]["+4.4"] = "restored"


def test_a_source_edit_is_caught_and_regenerating_follows_it(mn, tmp_path, monkeypatch):
    """A teacher edits one sentence in the lesson's source: the committed notebook no longer matches until it is
    regenerated, and regenerating puts the sentence in both variants."""
    copy = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", copy)
    src = copy / "src" / "07_pitfalls.py"
    src.write_text(src.read_text().replace("# - Write the fixed versions", "# - Write the mended versions", 1))
    monkeypatch.setattr(mn, "ROOT", copy)
    monkeypatch.setattr(mn, "EXERCISES", copy / "exercises")
    monkeypatch.setattr(mn, "NOTEBOOKS", mn.load_all(copy / "src"))
    assert any("07_pitfalls.ipynb differs from its source, notebooks/src/07_pitfalls.py" in p for p in mn.check())
    for path, nb in mn.targets():
        mn.write(path, nb)
    assert mn.check() == []
    for path in (copy / "07_pitfalls.ipynb", copy / "exercises" / "07_pitfalls.ipynb"):
        assert "Write the mended versions" in nbformat.read(path, as_version=4).cells[0].source


@pytest.mark.parametrize("bad, message", [
    ('# %% [markdown] tags=["hint"] difficulty=2 importance=2\n# a hint\n\n# %% tags=["solution"]\nx = 1\n',
     "tagged 'blank'"),
    ('# %% [markdown] tags=["hint"] difficulty=5 importance=2\n# a hint\n\n# %% tags=["solution"]\nx = 1\n\n'
     '# %% tags=["blank"]\nx = ...\n', "1-3"),
    ('# %% [markdown] tags=["predict"]\n# What will it print?\n\n# %%\nprint(1)\n', "tagged 'answer'"),
    ('# %% tags=["solutoin"]\nx = 1\n', "unknown or misplaced tags"),
])
def test_a_malformed_source_is_refused_with_the_file_and_cell(mn, tmp_path, bad, message):
    path = tmp_path / "99_bad.py"
    path.write_text(bad)
    with pytest.raises(ValueError, match=message) as err:
        mn.load(path)
    assert "99_bad.py, cell" in str(err.value)


def test_every_notebook_links_to_colab_at_its_own_file(mn):
    repo = mn.repository().removeprefix("https://github.com/")
    for path, nb in mn.targets():
        relative = path.relative_to(ROOT).as_posix()
        assert f"colab.research.google.com/github/{repo}/blob/main/{relative})" in nb.cells[0].source, relative
        assert nb.cells[0].source.startswith("# ")  # the title stays first


def test_every_lesson_has_a_design_exercise(mn):
    """ARENA-level pedagogy: beyond transcribing an equation, every lesson asks the learner to design a
    measurement or a control (the task text says so), checked by `steerlens.exercises`."""
    for name, cells in mn.NOTEBOOKS.items():
        tasks = [cells[i - 1][1] for i, (kind, *_) in enumerate(cells) if kind == "exercise" and i > 0
                 and cells[i - 1][0] == "md"]
        assert any("design" in t.lower() for t in tasks), f"{name} has no design exercise"
        assert all("check_" in body[0] for kind, *body in cells if kind == "exercise"), f"{name}: an unchecked exercise"


def test_widget_state_is_refused_and_stripped(mn, tmp_path, monkeypatch):
    """A cold run's progress bar leaves ipywidgets state, whose docs page would load a script from a CDN: the
    check refuses it, and strip_widgets (what --execute applies) removes it and keeps the plain-text output."""
    copy = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", copy)
    monkeypatch.setattr(mn, "ROOT", copy)
    monkeypatch.setattr(mn, "EXERCISES", copy / "exercises")
    path = copy / "03_pace.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.outputs.append(nbformat.v4.new_output("display_data", data={
        mn.WIDGET: {"model_id": "x", "version_major": 2, "version_minor": 0}, "text/plain": "  0%|          |"}))
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    nbformat.write(nb, path)
    assert any("03_pace.ipynb holds ipywidgets state" in p for p in mn.check())
    nbformat.write(mn.strip_widgets(nbformat.read(path, as_version=4)), path)
    assert mn.check() == []
    stripped = nbformat.read(path, as_version=4)
    assert "widgets" not in stripped.metadata
    first = next(c for c in stripped.cells if c.cell_type == "code")
    assert first.outputs[-1].data == {"text/plain": "  0%|          |"}
