"""One evaluation harness for every method and task: what ``steerlens eval``, ``sweep`` and ``bench`` run.

Tasks and their data (``steerlens.tasks``):

- ``detox`` / ``sentiment``: JSONL, one object per line with a ``prompt`` (a user message, chat template)
  or a ``prefix`` (raw text the model continues). Only the generated continuation is scored:
  ``offensive_prob`` (alt-profanity-check), ``vader_compound`` (VADER), ``perplexity`` (of the responses
  under the unsteered model, given the unsteered context), ``diversity``, ``length``.
- ``truthfulqa``: a CSV with the official columns; ``mc1`` and ``mc2``.
- ``bias``: JSONL rows of BBQ-style questions (``steerlens.bias``); ``accuracy`` overall and per condition
  (``accuracy_amb``, ``accuracy_dis``) and BBQ's bias scores (``bias_amb``, ``bias_dis``).

The harness knows no method by name. A method is a registered name, an ``Editor`` subclass, ``module:Class``
or ``file.py:Class`` (``editing.resolve_method``); its recipe (``Editor.for_task``), its settings and their
per-task defaults (``settings_spec``, ``task_defaults``) live in its own file. Methods are fitted on ``train``
when given (same format as the evaluated prompts), else on the project's shipped data for the task; any
training item whose prompt or question is also being evaluated is dropped first (and the count printed).
Fitted editors are cached under ``cache_dir()/editors`` keyed by method, task, checked settings, training
data and model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from . import methods as _methods  # noqa: F401  (registers the shipped methods)
from .bias import prompt_of as bias_prompt
from .bias import score_bias
from .data import data_dir
from .editing import Editor, ModelSpec, method_names, resolve_method
from .evaluation import text_metrics
from .files import cache_lock
from .generation import format_chat
from .settings import scaled_layers
from .tasks import (  # noqa: F401  (re-exported: they lived here)
    MC_TASKS,
    SYSTEM_PROMPTS,
    TASKS,
    TEXT_TASKS,
    Task,
    check_task,
    contexts_of,
    item_key,
    load_items,
    respond,
    reward_fn,
    shipped_train_path,
    shipped_train_rows,
    undesirability,
)
from .truthfulqa import score_truthfulqa

TEXT_METRICS = ("offensive_prob", "vader_compound", "perplexity", "diversity", "length")
MC_METRICS = ("mc1", "mc2")
BIAS_METRICS = ("accuracy", "accuracy_amb", "accuracy_dis", "bias_amb", "bias_dis")


def task_metrics(task: str) -> tuple[str, ...]:
    """The metrics ``evaluate`` reports for ``task``."""
    return {"truthfulqa": MC_METRICS, "bias": BIAS_METRICS}.get(task, TEXT_METRICS)

MethodLike = str | type[Editor]


def methods() -> list[str]:
    """Every registered method, in registration order (the shipped ones, then entry points')."""
    return method_names()


def check_method(method: MethodLike | Editor) -> type[Editor]:
    """The editor class of ``method`` (a name, class, ``module:Class`` or a fitted editor), or a ``ValueError``;
    a class that is to be fitted must have a task recipe (``Editor.for_task``)."""
    if isinstance(method, Editor):
        return type(method)
    cls = resolve_method(method)
    if not cls.has_recipe():
        raise ValueError(f"{cls.__name__} ({cls.method!r}) has no task recipe: define the classmethod "
                         "for_task(cls, model, task, settings) so eval, sweep and bench can fit it, or pass a "
                         "fitted editor")
    return cls


class _Defaults(Mapping):
    """``DEFAULTS[method][task]``: each method's recipe defaults for the task, read from the method's own
    declarations (kept for code written against the former table)."""

    def __getitem__(self, method: str) -> dict[str, dict[str, Any]]:
        cls = resolve_method(method)
        return {t: cls.task_settings(t) for t in (cls.tasks or TASKS)}

    def __iter__(self) -> Iterator[str]:
        return iter(method_names())

    def __len__(self) -> int:
        return len(method_names())


DEFAULTS = _Defaults()


def settings_for(method: MethodLike, task: str, model: Any, overrides: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The method's recipe settings for the task (its declared defaults and ``task_defaults``), updated by
    ``overrides``, every value checked against the method's declaration (``settings.SettingError``, one line,
    on an unknown name or a disallowed value). With ``model=None`` the layers are left unscaled (for checking
    settings before the model loads); so is a single ``layer``."""
    check_task(task)
    s = check_method(method).task_settings(task, overrides)
    if model is not None:
        if "layers" in s:
            s["layers"] = scaled_layers(s["layers"], model.cfg.n_layers)
        if s.get("layer") is not None:  # RE-Control's one residual layer, at the same relative depth
            s["layer"] = scaled_layers([s["layer"]], model.cfg.n_layers)[0]
    return s


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


# Evaluation-only prompt sets added after the shipped editors were fitted. No fit reads them, so they are left
# out of the digest (the older evaluation splits stay in it: the shipped editors' keys were made with them).
EVALUATION_ONLY = {"detox/cv.jsonl", "detox/test.jsonl"}


def _shipped_data_digest(task: str | None = None) -> str:
    """Digest of the shipped data a fit for ``task`` can read (the task's folder, the contrast pairs and the
    concept list; every file under ``data/`` when ``task`` is None; ``EVALUATION_ONLY`` left out): a cached
    editor fitted on older shipped data is not reused, and data added for another task does not invalidate it."""
    root = data_dir()
    folders = None if task is None else {task, "pairs", "concepts"}
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root)
        if folders is not None and rel.parts[0] not in folders or rel.as_posix() in EVALUATION_ONLY:
            continue
        h.update(rel.as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


# Fitted editors shipped in the package for the default model (the slow fits the demo and `steerlens eval`
# need), named like their cache entries; rebuilt by ``python tools/ship_artefacts.py``.
SHIPPED_EDITORS = Path(__file__).resolve().parent / "assets" / "editors"


def training_rows(task: str, train: Sequence[dict[str, Any]] | None) -> tuple[bool, list[dict[str, Any]]]:
    """``(shipped, rows)``: the rows a fit for ``task`` learns from, and whether they are the shipped training
    data: ``train`` is ``None``, or (for the multiple-choice tasks, whose recipes read nothing but the rows)
    exactly the shipped rows, as when ``--train`` names a copy of the shipped file. Then the fit is the shipped
    one, so the editor shipped for the default model is used."""
    if train is None:
        return True, shipped_train_rows(task)
    rows = list(train)
    if task in MC_TASKS:
        shipped_rows = shipped_train_rows(task)
        if rows == shipped_rows:
            return True, shipped_rows
    return False, rows


def editor_entry(model: Any, method: MethodLike, task: str, train: Sequence[dict[str, Any]] | None = None,
                 exclude: Sequence[str] = (), max_new_tokens: int = 48, settings: dict[str, Any] | None = None,
                 ) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """The cache entry name of an editor ``fit_editor`` would fit, with the training rows and settings it uses
    (checked: the key holds the canonical values, so equal settings written two ways share one entry)."""
    name, kept, settings, _ = _entry(model, method, task, train, exclude, max_new_tokens, settings)
    return name, kept, settings


def _entry(model: Any, method: MethodLike, task: str, train: Sequence[dict[str, Any]] | None,
           exclude: Sequence[str], max_new_tokens: int, settings: dict[str, Any] | None,
           ) -> tuple[str, list[dict[str, Any]], dict[str, Any], bool]:
    """``editor_entry`` and whether the training rows are the shipped ones (``training_rows``)."""
    cls = check_method(method)
    check_task(task)
    settings = settings_for(cls, task, model, settings)
    shipped, rows = training_rows(task, train)
    excluded = set(exclude)
    kept = [r for r in rows if item_key(r) not in excluded]
    if len(kept) < len(rows):
        print(f"{cls.method}: dropped {len(rows) - len(kept)} training item(s) that are also being evaluated")
    if not kept:
        raise ValueError("No training data left once the evaluated prompts are removed; pass --train")
    # shipped data enters the key only where it is used: the shipped training set, or data the method reads
    # whatever the training rows (a shipped concept list)
    digest = _shipped_data_digest(task) if shipped or cls.reads_shipped_data else ""
    parts = [cls.method, task, settings, ModelSpec.of(model).name, shipped, [item_key(r) for r in kept],
             max_new_tokens if cls.generation_length_in_key or not shipped else 0, digest]
    if cls.recipe_revision:
        parts.append(f"recipe {cls.recipe_revision}")
    if not cls.__module__.startswith("steerlens."):  # a method from outside: its class is part of its identity
        parts.append(f"{cls.__module__}.{cls.__qualname__}")
    return f"{cls.method}-{task}-{_hash(parts)}", kept, settings, shipped


def fit_editor(model: Any, method: MethodLike | Editor, task: str, train: Sequence[dict[str, Any]] | None = None,
               exclude: Sequence[str] = (), max_new_tokens: int = 48, cache: bool = True,
               settings: dict[str, Any] | None = None, progress: bool = True) -> Editor:
    """Fit ``method`` for ``task`` (cached) with its recipe (``Editor.for_task``). ``method``: a name, an
    ``Editor`` subclass, ``module:Class``, or a fitted editor (returned as it is, checked against the model).
    ``train`` rows as returned by ``load_items``; ``None`` uses the shipped training data. Rows whose
    prompt/question is in ``exclude`` are dropped before fitting.

    Looked for first in the cache, then among the editors shipped for the default model (used only when the
    weights fingerprint matches); fitted otherwise. A cache entry that no longer passes its method's
    declarations (settings or tensors edited, or written by another version) is refitted, not trusted."""
    from .models import cache_dir

    if isinstance(method, Editor):
        if settings:
            raise ValueError("A fitted editor's settings are fixed: pass its class or name to fit with settings")
        method.model.check(model, f"{method.method} editor")
        return method
    cls = check_method(method)
    name, kept, settings, shipped = _entry(model, cls, task, train, exclude, max_new_tokens, settings)

    def fit(partial: Path | None) -> Editor:
        t = Task(task, model, kept, shipped=shipped, max_new_tokens=max_new_tokens, progress=progress,
                 workdir=partial)
        editor = cls.for_task(model, t, dict(settings))
        if not isinstance(editor, Editor):
            raise ValueError(f"{cls.__name__}.for_task returned {type(editor).__name__}, not an Editor")
        return editor

    path = cache_dir() / "editors" / name
    if cache and not (path / "editor.json").is_file() and (SHIPPED_EDITORS / name / "editor.json").is_file():
        try:
            return Editor.load(SHIPPED_EDITORS / name, model=model)
        except ValueError:  # shipped for another model of the same name: fit it
            pass
    if not cache:
        return fit(None)
    cached = _load_cached(path, model)
    if cached is not None:
        return cached
    with cache_lock(path, f"fitting the same {cls.method} editor"):
        cached = _load_cached(path, model)  # another process fitted it while this one waited
        if cached is not None:
            return cached
        editor = fit(path.with_name(path.name + ".partial"))
        editor.save(path)
    shutil.rmtree(path.with_name(path.name + ".partial"), ignore_errors=True)
    return editor


def _load_cached(path: Path, model: Any) -> Editor | None:
    """The cached editor at ``path``, or ``None`` when there is none or it fails its method's declarations
    (then it is removed, to be refitted)."""
    if not (path / "editor.json").is_file():
        return None
    try:
        return Editor.load(path, model=model)
    except ValueError as e:
        print(f"steerlens: the cached editor {path.name} is refitted: {e}")
        (path / "editor.json").unlink(missing_ok=True)
        return None


# -- evaluation ---------------------------------------------------------------------------------------------
def _steering(model: Any, editor: Editor | None) -> Any:
    return nullcontext() if editor is None else editor.apply(model)


def measure(model: Any, task: str, rows: Sequence[dict[str, Any]], editor: Editor | None,
            max_new_tokens: int = 48, progress: bool = True, desc: str = "unsteered") -> dict[str, Any]:
    """Metrics, seconds and generations of the model steered by ``editor`` (``None``: unsteered)."""
    system = getattr(editor, "system", None)
    t0 = time.perf_counter()
    if task in ("truthfulqa", "bias"):
        score = score_truthfulqa if task == "truthfulqa" else score_bias

        def run() -> dict[str, Any]:
            with _steering(model, editor):
                scores = score(model, rows, system=system, progress=progress)
            return {"metrics": {k: scores[k] for k in task_metrics(task)}, "seconds": time.perf_counter() - t0,
                    "generations": []}
        if editor is not None:
            return run()
        # the unsteered model's scores depend only on the model and the items: kept by content, so a second
        # evaluation on the same questions (another method, other settings) does not score them again
        from .editing import weights_fingerprint
        from .files import content_key, memo
        from .models import cache_dir

        key = content_key(ModelSpec.of(model).name, weights_fingerprint(model), task, list(rows), system)
        return memo(cache_dir() / "scores" / f"{task}-{key}.json", run,
                    save=lambda v, p: p.write_text(json.dumps(v)), load=lambda p: json.loads(p.read_text()))
    with _steering(model, editor):
        gens = respond(model, rows, max_new_tokens, system=system, progress=progress, desc=desc)
    seconds = time.perf_counter() - t0
    metrics = text_metrics(model, contexts_of(model, rows), gens)  # scored by the unsteered model
    return {"metrics": metrics, "seconds": seconds, "generations": gens}


def evaluate(model: Any, method: MethodLike | Editor, task: str, prompts: str | Path | Sequence[dict[str, Any]],
             train: str | Path | Sequence[dict[str, Any]] | None = None,
             max_new_tokens: int = 48, unsteered: dict[str, Any] | None = None,
             settings: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """The ``steerlens eval`` result (JSON schema in the README); ``unsteered`` reuses an earlier
    ``measure(model, task, rows, None)`` on the same rows. ``method``: a name, an ``Editor`` subclass,
    ``module:Class`` or a fitted editor. ``prompts``/``train``: paths or loaded rows. ``settings`` overrides
    the method's recipe defaults for the task (checked against its declaration before any work)."""
    cls = check_method(method)
    check_task(task)
    # the recipe's settings, checked before any work (a fitted editor's are its own)
    recipe = {} if isinstance(method, Editor) else settings_for(cls, task, model, settings)
    if max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be at least 1")
    rows = load_items(prompts, task) if isinstance(prompts, str | Path) else list(prompts)
    if not rows:
        raise ValueError("The prompt set is empty")
    check_prompt_lengths(model, rows, task, max_new_tokens, prompts if isinstance(prompts, str | Path) else None)
    train_rows = load_items(train, task) if isinstance(train, str | Path) else train
    t0 = time.perf_counter()
    editor = fit_editor(model, method, task, train_rows, exclude=[item_key(r) for r in rows],
                        max_new_tokens=max_new_tokens, settings=settings, progress=progress)
    fit_seconds = time.perf_counter() - t0
    base = unsteered or measure(model, task, rows, None, max_new_tokens, progress)
    steered = measure(model, task, rows, editor, max_new_tokens, progress, desc=cls.method)
    return {
        "method": cls.method, "task": task, "n": len(rows),
        "steered": steered["metrics"], "unsteered": base["metrics"],
        "seconds": {"steered": steered["seconds"], "unsteered": base["seconds"]},
        "generations": {"steered": steered["generations"], "unsteered": base["generations"]},
        "fit_seconds": fit_seconds,
        # the method's settings (e.g. PaCE's stimuli and partition, which the editor does not keep), then
        # the fitted editor's own
        "settings": {**recipe,
                     **{k: v for k, v in editor.settings.items() if k != "concepts"}, "layers": list(editor.layers)},
    }


def check_prompt_lengths(model: Any, rows: Sequence[dict[str, Any]], task: str, max_new_tokens: int,
                         source: str | Path | None = None) -> None:
    """Refuse, before any fitting or generation, a row that does not fit the model's context (with the new
    tokens it asks for); the error names the file and row (see ``generation.check_context``)."""
    from .generation import check_context

    where = f"{source}: row" if source is not None else "Row"
    if task == "truthfulqa":
        texts = [format_chat(model.tokenizer, r["question"]) + " " + max([*r["correct"], *r["incorrect"]], key=len)
                 for r in rows]
        extra = 0
    elif task == "bias":
        texts = [bias_prompt(model, r) + max(r["answers"], key=len) for r in rows]
        extra = 0
    else:
        texts, extra = contexts_of(model, rows), max_new_tokens
    lengths = [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    check_context(model, lengths, extra, [f"{where} {i}" for i in range(1, len(rows) + 1)])


def format_result(result: dict[str, Any]) -> str:
    """A readable table of one ``evaluate`` result."""
    keys = task_metrics(result["task"])
    lines = [f"{result['method']} on {result['task']} ({result['n']} items)",
             f"{'metric':<16}{'unsteered':>12}{'steered':>12}{'change':>12}"]
    for k in keys:
        a, b = result["unsteered"][k], result["steered"][k]
        lines.append(f"{k:<16}{a:>12.4f}{b:>12.4f}{b - a:>+12.4f}")
    s = result["seconds"]
    lines.append(f"{'seconds':<16}{s['unsteered']:>12.1f}{s['steered']:>12.1f}"
                 f"{s['steered'] / max(s['unsteered'], 1e-9):>11.2f}x")
    return "\n".join(lines)

