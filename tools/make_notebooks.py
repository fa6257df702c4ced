"""Write the step-through notebooks from their readable sources, ``notebooks/src/NAME.py``.

A lesson's source is a Jupytext percent-format file: it opens as a notebook in Jupyter (with the jupytext
extension) and reads as a script anywhere else. Cells are ``# %%`` (code) and ``# %% [markdown]``; four cell tags
mark the course's structure:

- ``# %% [markdown] tags=["predict"]``, then ``# %% [markdown] tags=["answer"]``: a "predict, then run" question,
  its answer folded to open after the next cell runs;
- ``# %% [markdown] tags=["hint"] difficulty=2 importance=3`` (each 1-3), then ``# %% tags=["solution"]``, then
  ``# %% tags=["blank"]``: an exercise. Its rating and folded hint come above it in both variants.

Two variants come from one source (ARENA's layout):

- the **solution** variant, ``notebooks/NAME.ipynb``: exercises filled in with their solutions; committed
  *executed*, so figures show on GitHub and in the docs; CI runs it with nbmake;
- the **exercise** variant, ``notebooks/exercises/NAME.ipynb`` (only for lessons with exercises): each
  exercise cell blank for the learner, its solution folded away in a ``<details>`` cell below it.

Both get an "Open in Colab" link under the title, to their own file in the repository named by
``[project.urls] Repository`` in pyproject.toml.

Run:
    python tools/make_notebooks.py                 # rewrite both variants; keep a solution notebook's outputs
                                                   # where its code cells did not change
    python tools/make_notebooks.py --execute NAME  # ... and execute NAME (or ``all``), saving the outputs
    python tools/make_notebooks.py --check         # exit 1 if a committed notebook differs from its source, or
                                                   # its prose quotes a number its run did not print
"""

import argparse
import functools
import re
import sys
from pathlib import Path

import jupytext
import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1] / "notebooks"
EXERCISES = ROOT / "exercises"
SOURCES = ROOT / "src"
PYPROJECT = ROOT.parent / "pyproject.toml"


def rated(difficulty: int, importance: int, hint: str) -> dict:
    """An exercise's rating (1-3 each, ARENA's scale shortened) and its hint, shown folded above the exercise in
    both variants."""
    if difficulty not in (1, 2, 3) or importance not in (1, 2, 3) or not hint.strip():
        raise ValueError(f"a rating is 1-3 twice and a hint; got {difficulty}, {importance}, {hint!r}")
    return {"difficulty": difficulty, "importance": importance, "hint": hint}


def predict(question: str, answer: str) -> tuple[str, str]:
    """A "predict, then run" question: the learner commits to an answer before the next cell runs; the answer is
    folded, to open afterwards."""
    return ("md", f"**Predict, then run.** {question}\n\n<details><summary>Answer (open after running the next "
                  f"cell)</summary>\n\n{answer}\n</details>")


def rating_cell(rating: dict) -> str:
    dots = {n: "\u25cf" * n + "\u25cb" * (3 - n) for n in (1, 2, 3)}
    return (f"Difficulty {dots[rating['difficulty']]} ({rating['difficulty']}/3) \u00b7 Importance "
            f"{dots[rating['importance']]} ({rating['importance']}/3)\n\n<details><summary>Hint</summary>\n\n"
            f"{rating['hint']}\n</details>")


def load(path: Path) -> list[tuple]:
    """One lesson's cell list from its percent-format source: ``("md", text)``, ``("code", source)``,
    ``predict(...)``'s cell, or ``("exercise", solution, blank, rated(...))``. Raises ``ValueError`` naming the file
    and cell when a tag is unknown or an exercise or prediction is incomplete."""
    cells = jupytext.read(path, fmt="py:percent").cells
    out, i = [], 0

    def take(j: int, kind: str, tag: str) -> str:
        if j >= len(cells) or cells[j].cell_type != kind or cells[j].metadata.get("tags") != [tag]:
            raise ValueError(f"{path.name}, cell {j}: expected a {kind} cell tagged {tag!r} here (see "
                             f"tools/make_notebooks.py's docstring for the layout)")
        return cells[j].source

    while i < len(cells):
        cell = cells[i]
        tags = cell.metadata.get("tags", [])
        if tags == ["predict"]:
            out.append(predict(take(i, "markdown", "predict"), take(i + 1, "markdown", "answer")))
            i += 2
        elif tags == ["hint"]:
            try:
                rating = rated(cell.metadata.get("difficulty"), cell.metadata.get("importance"), cell.source)
            except ValueError as e:
                raise ValueError(f"{path.name}, cell {i}: {e}") from None
            out.append(("exercise", take(i + 1, "code", "solution"), take(i + 2, "code", "blank"), rating))
            i += 3
        elif tags:
            raise ValueError(f"{path.name}, cell {i}: unknown or misplaced tags {tags} (known: predict then answer, "
                             f"hint then solution then blank)")
        else:
            out.append(("md" if cell.cell_type == "markdown" else "code", cell.source))
            i += 1
    return out


def load_all(folder: Path | None = None) -> dict[str, list[tuple]]:
    """Every lesson's cell list, by notebook file name."""
    return {p.stem + ".ipynb": load(p) for p in sorted((folder or SOURCES).glob("*.py"))}


@functools.cache
def repository() -> str:
    """The repository's URL from pyproject.toml (``[project.urls] Repository``), for the Colab links."""
    import tomllib

    with open(PYPROJECT, "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


def colab_link(relative: str) -> str:
    """The "Open in Colab" line for a notebook at ``relative`` (from the repository root)."""
    url = repository()
    return (f"[Open in Colab](https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/"
            f"main/{relative}) (there, run `%pip install \"steerlens @ git+{url}\"` first)")


NOTEBOOKS: dict[str, list[tuple]] = load_all()


def _cell(kind: str, source: str) -> nbf.NotebookNode:
    return nbf.v4.new_markdown_cell(source) if kind == "md" else nbf.v4.new_code_cell(source)


def build(cells: list[tuple[str, ...]], variant: str, name: str | None = None) -> nbf.NotebookNode:
    """The notebook of one variant ("solution" or "exercise") from its cell list; with the notebook's file
    ``name``, an "Open in Colab" link to that variant's file goes under the title."""
    out = []
    for kind, *body in cells:
        if kind != "exercise":
            out.append(_cell(kind, body[0]))
            continue
        if len(body) != 3:
            raise ValueError(f"an exercise needs its solution, its blank and rated(...): {body[0][:60]!r}")
        out.append(_cell("md", rating_cell(body[2])))
        if variant == "solution":
            out.append(_cell("code", body[0]))
        else:
            out.append(_cell("code", body[1]))
            fold = "<details><summary>Solution</summary>\n\n```python\n" + body[0] + "\n```\n</details>"
            out.append(_cell("md", fold))
    if name is not None and out and out[0].cell_type == "markdown":
        title, _, rest = out[0].source.partition("\n")
        where = f"notebooks/{name}" if variant == "solution" else f"notebooks/exercises/{name}"
        out[0].source = f"{title}\n\n{colab_link(where)}\n{rest}"
    nb = nbf.v4.new_notebook()
    nb.cells = out
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives clean diffs
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def has_exercises(cells: list[tuple[str, ...]]) -> bool:
    return any(kind == "exercise" for kind, *_ in cells)


def sources(nb: nbf.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def targets() -> list[tuple[Path, nbf.NotebookNode]]:
    """Every notebook file the sources define, with its generated (unexecuted) content."""
    out = []
    for name, cells in NOTEBOOKS.items():
        out.append((ROOT / name, build(cells, "solution", name)))
        if has_exercises(cells):
            out.append((EXERCISES / name, build(cells, "exercise", name)))
    return out


def write(path: Path, nb: nbf.NotebookNode) -> None:
    """Write ``nb``, keeping the committed file's outputs when every code cell is unchanged."""
    if path.exists():
        old = nbf.read(path, as_version=4)
        code = [c for c in old.cells if c.cell_type == "code"]
        new_code = [c for c in nb.cells if c.cell_type == "code"]
        if [c.source for c in code] == [c.source for c in new_code]:
            for c, o in zip(new_code, code, strict=True):
                c.outputs, c.execution_count = o.get("outputs", []), o.get("execution_count")
            nb.metadata = old.metadata  # the kernel's language_info from its run: no churn in untouched files
    path.parent.mkdir(parents=True, exist_ok=True)
    nbf.write(nb, path)


def execute(path: Path, timeout: int = 900) -> float:
    """Execute a solution notebook in place (in its folder, as nbmake does); returns the seconds taken."""
    import time

    from nbclient import NotebookClient

    nb = nbf.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   record_timing=False).execute()
    seconds = time.perf_counter() - t0
    nbf.write(strip_widgets(nb), path)
    return seconds


WIDGET = "application/vnd.jupyter.widget-view+json"


def strip_widgets(nb: nbf.NotebookNode) -> nbf.NotebookNode:
    """Drop ipywidgets' state (a progress bar's, on a cold run) from an executed notebook, keeping each output's
    plain-text form: rendered pages would otherwise load the widget manager from a CDN."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            out.get("data", {}).pop(WIDGET, None)
    return nb


# Numbers that a "What to see" cell or a prediction's answer quotes from somewhere other than the notebook's own
# printed outputs, each with its source. Every other decimal number in those cells must match a number the run
# printed (or the code set), to the quoted precision: `check` fails when the prose and the run disagree.
QUOTED_ELSEWHERE: dict[str, dict[str, str]] = {
    "02_sea.ipynb": {
        **dict.fromkeys(("0.95", "0.05"), "a setting (SEA's K, ActAdd's alpha), not a result"),
        **dict.fromkeys(("99.7", "99.9"), "benchmarks/sea_redesign.py --diagnose, all 419 development questions"),
        **dict.fromkeys(("+4.4", "+7.2", "+2.9", "+3.4", "+7.0", "+7.6", "+4.7", "+7.7", "+9.2", "+8.9", "-0.5"),
                        "benchmarks/sea_redesign.py, nested cross-validation on the development split (README)"),
        **dict.fromkeys(("6.2", "9.2", "5.3"), "benchmarks/sea_fluency.py, eight prompts"),
    },
    "03_pace.ipynb": {
        **dict.fromkeys(("0.40", "0.30", "0.15"), "the run's per-token removal figure (plotted, not printed)"),
        **dict.fromkeys(("0.119", "0.050", "0.124", "0.086"), "benchmarks/pace_detox.py on 600 prompts (README)"),
        "1.5": "benchmarks/pace_speed.py (README, 'PaCE on a small model')",
    },
    "06_geometry_and_controls.ipynb": {
        "0.99": "a setting (SEA's detox K)", "0.001": "notebook 05's printed KL",
    },
    "07_pitfalls.ipynb": {"3.3": "the ratio of two edits in an earlier version of the lesson (history)"},
}
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?!\w)")


def _printed_numbers(nb: nbf.NotebookNode) -> list[float]:
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = [cell.source]
        for o in cell.get("outputs", []):
            texts.append(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", "")))
        for t in texts:
            out += [float(m) for m in re.findall(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", t)]
    return out


def unbound_claims(name: str, nb: nbf.NotebookNode) -> list[str]:
    """The decimal numbers that ``name``'s "What to see" cells and prediction answers quote, which neither match a
    number in its code or printed outputs (to the quoted precision, as a value or a percentage) nor are listed in
    ``QUOTED_ELSEWHERE``; and listed numbers the prose no longer quotes."""
    printed = _printed_numbers(nb)
    elsewhere = QUOTED_ELSEWHERE.get(name, {})
    problems, used = [], set()
    for cell in nb.cells:
        if cell.cell_type != "markdown" or not ("What to see" in cell.source or "**Predict" in cell.source):
            continue
        prose = re.sub(r"`[^`]*`|\$[^$]*\$", "", cell.source)  # code and maths are not claims about the run
        for quoted in _NUMBER.findall(prose):
            if quoted in elsewhere:
                used.add(quoted)
                continue
            q = abs(float(quoted))
            tol = 0.5 * 10 ** -len(quoted.split(".")[1]) * 1.001
            if not any(abs(abs(v) - q) <= tol or abs(abs(v) * 100 - q) <= tol for v in printed):
                problems.append(f"{name}: the prose quotes {quoted}, which the run never printed "
                                f"(...{cell.source[max(0, cell.source.find(quoted) - 60):][:100]!r}...)")
    problems += [f"{name}: QUOTED_ELSEWHERE lists {q}, which the prose no longer quotes" for q in elsewhere
                 if q not in used]
    return problems


def check() -> list[str]:
    """The committed notebooks that differ from their source (cells' kinds and text; outputs ignored), and
    stray files with no source."""
    problems = []
    expected = {path for path, _ in targets()}
    for path, nb in targets():
        if not path.exists():
            problems.append(f"{path.relative_to(ROOT.parent)} is missing")
        elif sources(nbf.read(path, as_version=4)) != sources(nb):
            problems.append(f"{path.relative_to(ROOT.parent)} differs from its source, notebooks/src/{path.stem}.py")
    for name in NOTEBOOKS:
        if (ROOT / name).exists():
            committed = nbf.read(ROOT / name, as_version=4)
            problems += unbound_claims(name, committed)
            if "widgets" in committed.metadata or any(WIDGET in o.get("data", {}) for c in committed.cells
                                                      for o in c.get("outputs", [])):
                problems.append(f"notebooks/{name} holds ipywidgets state (its docs page would load a script from a "
                                f"CDN): execute it with this tool, which strips it")
    for path in [*ROOT.glob("*.ipynb"), *EXERCISES.glob("*.ipynb")]:
        if path not in expected:
            problems.append(f"{path.relative_to(ROOT.parent)} has no source in notebooks/src/")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", nargs="*", metavar="NAME", help="execute these solution notebooks (or all)")
    parser.add_argument("--check", action="store_true", help="only check the committed notebooks against the source")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("regenerate with: python tools/make_notebooks.py --execute all", file=sys.stderr)
        return 1 if problems else 0
    for path, nb in targets():
        write(path, nb)
        print("wrote", path.relative_to(ROOT.parent))
    if args.execute is not None:
        wanted = list(NOTEBOOKS) if args.execute in ([], ["all"]) else [n if n.endswith(".ipynb") else n + ".ipynb"
                                                                         for n in args.execute]
        unknown = [n for n in wanted if n not in NOTEBOOKS]
        if unknown:
            parser.error(f"unknown notebooks {unknown}; known: {', '.join(NOTEBOOKS)}")
        for name in wanted:
            print(f"executed {name} in {execute(ROOT / name):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
