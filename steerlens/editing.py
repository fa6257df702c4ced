"""The editing protocol every steerlens method implements.

An editor is a fitted object that produces TransformerLens forward hooks: a list of
``(hook_name, fn)`` pairs where ``fn(act, hook)`` is a plain hook function. Nothing more exotic:
the pairs work with ``model.run_with_hooks(tokens, fwd_hooks=editor.fwd_hooks())``,
``model.hooks(fwd_hooks=...)`` and ``model.add_hook``. On top of that every editor offers

- ``editor.apply(model)``: a context manager that checks the model matches the editor, adds the
  hooks, and always removes them (on exit and on exceptions);
- ``editor.save(path)`` / ``Editor.load(path, model=...)``: a folder with ``tensors.safetensors``
  and ``editor.json`` (method, settings, and the model it was fitted on: name, d_model, n_layers).

Methods register themselves by name in ``REGISTRY`` so the CLI and ``load`` can find them; ``resolve_method``
also finds a method outside steerlens (``my_module:MyEditor``, ``path/to/file.py:MyEditor``, or an installed
package's ``steerlens.methods`` entry point). Each method declares, beside it:

- ``settings_spec``: its settings (``steerlens.settings.Setting``: type, range or choices, default, help),
  checked wherever a setting enters (``--set``, ``fit`` keywords, ``editor.json``, the cache key);
- ``tensor_spec``: its tensors (``TensorSpec``: names per layer, shapes in terms of ``d_model``), checked by
  ``load``;
- ``task_defaults`` and ``for_task``: its recipe for each task (what ``steerlens eval``, ``sweep`` and
  ``bench`` fit), reading the task's data from a ``steerlens.tasks.Task``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file, save_file

from .context import POSITIONS, PromptSpan, position_mask, prompt_span  # noqa: F401  (re-exported)
from .files import atomic_file
from .settings import Setting, SettingError, check_settings

HookFn = Callable[[torch.Tensor, Any], torch.Tensor | None]
FwdHooks = list[tuple[str, HookFn]]

REGISTRY: dict[str, type[Editor]] = {}
E = TypeVar("E", bound="Editor")

FORMAT_VERSION = 1


def register(cls: type[E]) -> type[E]:
    """Class decorator: make an editor class loadable and usable from the CLI by its ``method`` name."""
    if not isinstance(cls, type) or not issubclass(cls, Editor):
        raise TypeError(f"register expects an Editor subclass, got {cls!r}")
    if not isinstance(cls.method, str) or not cls.method or cls.method == "base":
        raise ValueError(f"{cls.__name__} must set a class attribute `method` (its name), e.g. method = 'mine'")
    REGISTRY[cls.method] = cls
    return cls


ENTRY_POINT_GROUP = "steerlens.methods"
_entry_points_loaded = False


def load_entry_points() -> None:
    """Register the editors that installed packages declare in the ``steerlens.methods`` entry-point group
    (each entry point names an ``Editor`` subclass, e.g. ``mine = my_package.editors:MyEditor``). Once per
    process; a broken entry point warns and is skipped."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
            register(cls)
        except Exception as e:  # a third-party package's import error must not break steerlens
            warnings.warn(f"steerlens: the {ENTRY_POINT_GROUP} entry point {ep.name!r} ({ep.value}) could not be "
                          f"loaded: {e}", stacklevel=2)


def method_names() -> list[str]:
    """Every registered method (the package's, then entry points'), in registration order."""
    load_entry_points()
    return list(REGISTRY)


def resolve_method(method: str | type[Editor]) -> type[Editor]:
    """The editor class for ``method``: a registered name, an ``Editor`` subclass, ``module:Class`` (a module
    on the path) or ``path/to/file.py:Class``. Classes from outside are registered (so ``load`` finds
    their saved editors). Errors say what was looked for."""
    if isinstance(method, type):
        if not issubclass(method, Editor):
            raise ValueError(f"{method!r} is not a steerlens Editor subclass")
        if method.method in REGISTRY and REGISTRY[method.method] is not method and method.method != "base":
            raise ValueError(f"Another editor class is registered as {method.method!r} "
                             f"({REGISTRY[method.method].__module__}.{REGISTRY[method.method].__qualname__}); "
                             "give yours another `method` name")
        return register(method) if REGISTRY.get(method.method) is not method else method
    if not isinstance(method, str) or not method.strip():
        raise ValueError(f"A method is a name, an Editor subclass or 'module:Class', not {method!r}")
    if method in REGISTRY:
        return REGISTRY[method]
    load_entry_points()
    if method in REGISTRY:
        return REGISTRY[method]
    if ":" not in method:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(REGISTRY)}, or name your own "
                         "editor class as module:Class or path/to/file.py:Class")
    where, _, name = method.rpartition(":")
    module = _import_module(where)
    cls = getattr(module, name, None)
    if cls is None:
        raise ValueError(f"{where} has no {name!r} (method {method!r})")
    if not isinstance(cls, type) or not issubclass(cls, Editor):
        raise ValueError(f"{method!r} is not a steerlens Editor subclass")
    return resolve_method(cls)


def _import_module(where: str) -> Any:
    """A module by dotted name, or from a ``.py`` file path."""
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise ValueError(f"No Python file at {path} (from the method {where!r})")
        name = f"steerlens_user_{path.stem}_{abs(hash(str(path.resolve()))):x}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"Cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file: say which and why, in one line
            sys.modules.pop(name, None)
            raise ValueError(f"{path} could not be imported: {type(e).__name__}: {e}") from None
        return module
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        raise ValueError(f"Cannot import module {where!r} ({e}); is it on the path (PYTHONPATH)?") from None
    except Exception as e:
        raise ValueError(f"Module {where!r} could not be imported: {type(e).__name__}: {e}") from None


@dataclass(frozen=True)
class TensorSpec:
    """One declared tensor of a method: ``name`` is a fixed name (``"undesirable"``), a per-layer name with
    ``{L}`` (``"vector.{L}"``) or a prefix ending in ``*`` (``"vf.*"``: any tensors under it, any shape).
    ``shape``: sizes, ``"d_model"``, a symbol (the same size wherever it appears in the file, e.g. PaCE's
    number of concepts ``"k"``) or ``"*"`` (any size); ``None``: any shape. ``dtype``: ``"float"`` or ``"bool"``."""

    name: str
    shape: tuple[int | str, ...] | None = None
    dtype: str = "float"
    optional: bool = False


def checked_settings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for an editor's fitting classmethods (under ``@classmethod``): keyword arguments named like a
    declared setting are checked against it before any work, and passed on in their canonical form."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(cls: Any, *args: Any, **kwargs: Any) -> Any:
        declared = {s.name: s for s in (cls.settings_spec or ()) if s.type not in ("layers", "object")}
        bound = signature.bind(cls, *args, **kwargs)
        values = {k: v for k, v in bound.arguments.items() if k in declared}
        checked = check_settings([declared[k] for k in values], values, cls.method, recipe=None)
        bound.arguments.update(checked)
        return fn(*bound.args, **bound.kwargs)

    return wrapper


def resid_hook_name(layer: int) -> str:
    """The residual-stream hook after block ``layer``; valid on HookedTransformer and TransformerBridge."""
    return f"blocks.{layer}.hook_resid_post"


FINGERPRINT_ROWS = 8


def weights_fingerprint(model: Any) -> list[float] | None:
    """Norms of ``FINGERPRINT_ROWS`` embedding rows spread over the vocabulary: cheap, the same for one model
    in any dtype or on any device (to ~1e-3), and different for another model of the same shape.
    ``None`` when the model exposes no ``W_E``."""
    try:
        w_e = model.W_E
    except AttributeError:
        return None
    if not isinstance(w_e, torch.Tensor) or w_e.dim() != 2:
        return None
    rows = torch.linspace(0, w_e.shape[0] - 1, FINGERPRINT_ROWS).round().long()
    with torch.no_grad():
        norms = w_e.detach()[rows.to(w_e.device)].float().norm(dim=-1)
    return [round(float(x), 5) for x in norms.cpu()]


@dataclass
class ModelSpec:
    """What an editor needs to know about the model it was fitted on, to refuse a mismatched one.

    ``fingerprint`` (``weights_fingerprint``) tells apart two models of the same shape; files written before
    it existed have ``None`` and are checked on shape only.
    """

    name: str
    d_model: int
    n_layers: int
    fingerprint: list[float] | None = None

    @classmethod
    def of(cls, model: Any) -> ModelSpec:
        cfg = model.cfg
        return cls(name=str(getattr(cfg, "model_name", "unknown")), d_model=int(cfg.d_model),
                   n_layers=int(cfg.n_layers), fingerprint=weights_fingerprint(model))

    def check(self, model: Any, what: str = "editor", strict: bool = True) -> None:
        """Raise ``ValueError`` saying what to do if ``model`` is not the model this was fitted on.

        A different shape is always refused (the hooks could not run). Same shape but other weights (the
        fingerprint differs) is refused unless ``strict=False``, which only warns: e.g. to try an editor on
        a fine-tune of the model it was fitted on.
        """
        other = ModelSpec.of(model)
        if (other.d_model, other.n_layers) != (self.d_model, self.n_layers):
            raise ValueError(
                f"This {what} was fitted on {self.name!r} (d_model={self.d_model}, n_layers={self.n_layers}) "
                f"but the model given is {other.name!r} (d_model={other.d_model}, "
                f"n_layers={other.n_layers}). Fit it again on this model, or load the model it was fitted on."
            )
        if self.fingerprint is None or other.fingerprint is None or len(self.fingerprint) != len(other.fingerprint):
            return
        a, b = torch.tensor(self.fingerprint), torch.tensor(other.fingerprint)
        if torch.allclose(a, b, rtol=1e-2, atol=1e-4):
            return
        message = (f"This {what} was fitted on {self.name!r}, but the model given ({other.name!r}) has the same "
                   f"shape and different weights (embedding fingerprint {self.fingerprint[:3]}... vs "
                   f"{other.fingerprint[:3]}...). Fit it again on this model")
        if strict:
            raise ValueError(message + ", or pass strict=False to apply it anyway.")
        warnings.warn(message + "; applying it anyway (strict=False).", stacklevel=3)


@dataclass
class Editor:
    """Base class of all editors. Subclasses set ``method`` and implement ``hook_fn``.

    Subclasses keep their learned tensors in ``tensors`` (name -> tensor, saved with safetensors) and
    their JSON-able settings in ``settings``; everything else must be derivable from those two.
    """

    method: ClassVar[str] = "base"
    # Declarations (see the module docstring). ``settings_spec = None``: the settings are not declared, so
    # ``--set`` takes none and saved settings are not checked; ``tensor_spec = None``: tensors not checked.
    settings_spec: ClassVar[tuple[Setting, ...] | None] = None
    tensor_spec: ClassVar[tuple[TensorSpec, ...] | None] = None
    # per task: the recipe's defaults that differ from the declared ones
    task_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    # the tasks the recipe supports (None: every task)
    tasks: ClassVar[tuple[str, ...] | None] = None
    # ``steerlens demo``: the demo tasks this method is shown on (task -> what to notice), and those where it is
    # shown as a reference beside them
    demo_notes: ClassVar[dict[str, str]] = {}
    demo_reference: ClassVar[tuple[str, ...]] = ()
    # cache key: does the fit read the evaluated generation length (rollouts), or the shipped data even when
    # the user gives training data (a shipped concept list)?
    generation_length_in_key: ClassVar[bool] = False
    reads_shipped_data: ClassVar[bool] = False
    # bump when ``for_task`` fits differently from the same data and settings (a fixed recipe bug): cached
    # editors fitted by the older recipe are then refitted, not reused (part of the cache key when non-zero)
    recipe_revision: ClassVar[int] = 0

    model: ModelSpec
    layers: list[int]
    settings: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.settings_spec is not None:  # the saved settings, checked wherever an editor is made or loaded
            self.settings.update(check_settings(self.settings_spec, self.settings, self.method, recipe=False,
                                                warn=False))

    # -- the recipe ---------------------------------------------------------------------------------------
    @classmethod
    def task_settings(cls, task: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The recipe's settings for ``task``: the declared defaults, this method's ``task_defaults[task]``,
        then ``overrides``, checked (``SettingError`` on an unknown name or a disallowed value). Layers are
        for a 30-layer model (the harness scales them to the model's depth)."""
        if cls.tasks is not None and task not in cls.tasks:
            raise ValueError(f"{cls.method} has no recipe for task {task!r}; it supports {', '.join(cls.tasks)}")
        spec = cls.settings_spec or ()
        out = {s.name: s.default for s in spec if s.recipe}
        out.update(cls.task_defaults.get(task, {}))
        out.update(check_settings(spec, overrides or {}, cls.method))
        return out

    @classmethod
    def has_recipe(cls) -> bool:
        """Whether this class defines ``for_task`` (what eval, sweep and bench fit with)."""
        return getattr(cls.for_task, "__func__", None) is not Editor.for_task.__func__

    @classmethod
    def for_task(cls, model: Any, task: Any, settings: dict[str, Any]) -> Editor:
        """Fit this method for ``task`` (a ``steerlens.tasks.Task``: the training rows, contrast pairs,
        rollouts, reward and undesirability) with the checked ``settings`` (``task_settings``). What
        ``steerlens eval``, ``sweep`` and ``bench`` call; a method from outside steerlens defines it too."""
        raise NotImplementedError(f"{cls.__name__} has no task recipe: define the classmethod "
                                  "for_task(cls, model, task, settings) to use it with eval, sweep and bench")

    # -- the hook contract ------------------------------------------------------------------------
    def hook_name(self, layer: int) -> str:
        """Where the edit for ``layer`` is applied. Default: the residual stream after the block."""
        return resid_hook_name(layer)

    def hook_fn(self, layer: int) -> HookFn:  # pragma: no cover - abstract
        raise NotImplementedError

    def fwd_hooks(self, strength: float = 1.0) -> FwdHooks:
        """The ``[(hook_name, fn)]`` list to pass to ``run_with_hooks`` / ``model.hooks``.

        Each ``fn`` adapts the method's edit to the activation it gets:

        - ``strength`` scales the edit: ``act + strength * (edit(act) - act)``; 0 is the identity, 1 the
          fitted edit, 2 twice the change (the ``multiplier`` of steering-vectors, repeng's ``strength``);
        - the editor's tensors are copied once to each device the hook meets (a model split over several
          devices steers without device errors), and float16 / bfloat16 activations are edited in float32
          and returned in their own dtype;
        - attention-sink positions keep their value (see ``apply``).
        """
        strength = check_strength(strength)
        copies: dict[str, Editor] = {}
        return [(self.hook_name(layer), self._adapted(layer, strength, copies)) for layer in self.layers]

    def _on(self, device: torch.device, copies: dict[str, Editor]) -> Editor:
        """This editor with its tensors on ``device`` (itself when they already are; else a cached copy)."""
        key = str(device)
        if key not in copies:
            if all(v.device == device for v in self.tensors.values()):
                copies[key] = self
            else:
                copies[key] = dataclasses.replace(self, tensors={k: v.to(device) for k, v in self.tensors.items()})
        return copies[key]

    def _adapted(self, layer: int, strength: float, copies: dict[str, Editor]) -> HookFn:
        per_device: dict[torch.device, tuple[HookFn, torch.Tensor | None]] = {}
        sink_key = f"sink_norm.{layer}"

        def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            if act.device not in per_device:
                on = self._on(act.device, copies)
                per_device[act.device] = (on.hook_fn(layer), on.tensors.get(sink_key))
            fn, threshold = per_device[act.device]
            x = act.float() if act.dtype in (torch.float16, torch.bfloat16) else act
            out = fn(x, hook)
            if out is None:  # a hook that edited in place
                out = x
            if strength != 1.0:
                out = x + strength * (out - x)
            if threshold is not None:
                out = torch.where(x.norm(dim=-1, keepdim=True) > threshold.to(x.dtype), x, out)
            return out if out.dtype == act.dtype else out.to(act.dtype)

        return hook

    @contextmanager
    def apply(self, model: Any, strength: float = 1.0, strict: bool = True) -> Iterator[Any]:
        """Context manager: ``with editor.apply(model): model.generate(...)``. Hooks never leak.

        ``strength`` scales the edit (see ``fwd_hooks``); ``strict=False`` applies an editor to a model of
        the same shape whose weights differ from the fitted one's (with a warning instead of an error).

        Attention sinks: small LMs park a massive activation on their first token (Sun et al. 2024,
        "Massive activations"); in SmolLM2 its norm is ~100x the others'. Editing it wrecks every later
        position, so positions whose norm exceeds the fitted ``sink_norm.{layer}`` keep their value. The
        rule depends on each token vector alone, so cached and uncached generation agree.
        """
        self.model.check(model, f"{self.method} editor", strict=strict)
        self.to(next(model.parameters()).device)
        with model.hooks(fwd_hooks=self.fwd_hooks(strength)):
            yield model

    def to(self, device: torch.device | str) -> Editor:
        for k, v in self.tensors.items():
            if v.device != torch.device(device):
                self.tensors[k] = v.to(device)
        return self

    def explain(self, model: Any, context: str, answer: str) -> str:
        """One line on what the edit did to ``context + answer`` (the demo's "how" line).

        Here: the edit's size, ``||edit(z) - z|| / ||z||`` averaged over the edited layers and the answer's
        tokens. Methods add what is specific to them (PaCE's removed concepts, SEA's ranks, RE-Control's
        value before and after control).
        """
        sizes = self.answer_edit_sizes(model, context, answer)
        return f"moves the answer's activations by {100 * sizes.mean():.1f}% of their norm{self._layer_text()}"

    def describe_step(self, states: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
        """A few words on what the edit did at one token, from ``{hook_name: (before [d], after [d])}`` at the
        position that produced it (``analysis.divergence_trace``'s per-token note). The edit's size is shown
        apart; methods override this to add what is specific to them (PaCE's concepts, RE-Control's V)."""
        return ""

    def answer_edit_sizes(self, model: Any, context: str, answer: str) -> torch.Tensor:
        """``[layers, answer tokens]`` relative edit sizes on ``context + answer`` (see ``edit_magnitudes``)."""
        from .generation import encode

        n_ctx = encode(model, [context])[0].shape[1]
        with prompt_span(n_ctx):
            sizes, _ = edit_magnitudes(model, self, context + answer)
        return sizes[:, n_ctx:] if sizes.shape[1] > n_ctx else sizes

    def _layer_text(self) -> str:
        if not self.layers:
            return ""
        first, last = min(self.layers), max(self.layers)
        return f" at layer {first}" if first == last else f" at layers {first}-{last}"

    def steering_vectors(self) -> dict[int, torch.Tensor]:
        """``{layer: vector}`` for editors whose edit adds one fixed vector per layer (ActAdd); others raise."""
        raise NotImplementedError(f"A {self.method} editor's edit depends on the activation: it is not one vector "
                                  "per layer, so it cannot be exported as a control vector")

    def export_gguf(self, path: str | Path, model_hint: str = "llama") -> Path:
        """Write the editor's steering vectors as a llama.cpp control vector (the GGUF that repeng's
        ``export_gguf`` writes): architecture ``controlvector``, one float32 tensor ``direction.{L}`` per layer.

        Layer numbering: steerlens' layer ``L`` (``blocks.L.hook_resid_post``, the output of block ``L``,
        0-based) is llama.cpp's ``direction.L``, which llama.cpp adds to the output of its layer ``L``.
        llama.cpp never reads ``direction.0``, so an editor at layer 0 is refused. Use it with
        ``llama-cli --control-vector-scaled file.gguf 1.0``. llama.cpp adds the vector to every position,
        the attention sink included, which steerlens leaves alone.
        """
        import gguf

        vectors = self.steering_vectors()
        if 0 in vectors:
            raise ValueError("llama.cpp does not apply a control vector at layer 0 (it reads direction.1 "
                             "onwards); fit the editor at a later layer")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = gguf.GGUFWriter(str(path), "controlvector")
        writer.add_string("controlvector.model_hint", model_hint)
        writer.add_uint32("controlvector.layer_count", len(vectors))
        for layer, v in sorted(vectors.items()):
            writer.add_tensor(f"direction.{layer}", v.detach().float().cpu().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path/editor.json`` and ``path/tensors.safetensors``; returns ``path``.

        The JSON is written last and each file is renamed into place whole, so an interrupted save
        leaves no ``editor.json`` that ``load`` would trust with the wrong tensors.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "model": vars(self.model),
            "layers": list(self.layers),
            "settings": self.settings,
        }
        (path / "editor.json").unlink(missing_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        with atomic_file(path / "tensors.safetensors") as tmp:
            save_file(tensors, str(tmp))
        with atomic_file(path / "editor.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path, model: Any | None = None, strict: bool = True) -> Editor:
        """Load an editor saved by ``save``. With ``model`` given, refuse a mismatched model (``strict=False``:
        only warn when the shape matches and the weights differ; see ``ModelSpec.check``).

        Called on ``Editor`` it returns the registered subclass named in the file; called on a
        subclass it also checks the file holds that method. Loading runs no code from the folder: the
        JSON is data and the tensors are safetensors (no pickle), and both are checked before use.
        """
        path = Path(path)
        meta_path = path / "editor.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"No saved editor at {path} (expected {meta_path}); save one with editor.save()")
        meta = _read_meta(meta_path)
        method = meta["method"]
        klass = REGISTRY[method]
        if cls is not Editor and klass is not cls:
            raise ValueError(f"{meta_path} holds a {method!r} editor, not {cls.method!r}; use Editor.load")
        if klass.settings_spec is not None:
            try:
                check_settings(klass.settings_spec, meta["settings"], method, recipe=False, warn=False)
            except SettingError as e:
                raise SettingError(f"{meta_path}: {e}. The file was edited or written by another version: "
                                   "fit and save the editor again") from None
        d_model = int(meta["model"]["d_model"])
        tensors = _read_tensors(path / "tensors.safetensors", meta["layers"])
        if klass.tensor_spec is not None:
            check_tensors(klass, tensors, meta["layers"], d_model, path)
        editor = klass(model=ModelSpec(**meta["model"]), layers=meta["layers"], settings=meta["settings"],
                       tensors=tensors)
        if model is not None:
            editor.model.check(model, f"saved {method} editor", strict=strict)
            editor.to(next(model.parameters()).device)
        return editor


def _read_meta(meta_path: Path) -> dict[str, Any]:
    """``editor.json``, checked field by field; errors name the file and say what is wrong."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{meta_path} is not a steerlens editor file: {what}. Save it again with editor.save()")

    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad(f"not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise bad("the top level is not an object")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise bad(f"format_version is {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{meta_path} was written by a newer steerlens (format {version}; this one reads up to "
                         f"{FORMAT_VERSION}); upgrade steerlens")
    if meta.get("method") not in REGISTRY:
        load_entry_points()
    if meta.get("method") not in REGISTRY:
        raise bad(f"method {meta.get('method')!r} is not one of {sorted(REGISTRY)}")
    spec = meta.get("model")
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    if (not isinstance(spec, dict) or not {"name", "d_model", "n_layers"} <= set(spec) or set(spec) - fields
            or not all(isinstance(spec[k], int) and spec[k] > 0 for k in ("d_model", "n_layers"))):
        raise bad(f"model must hold name, d_model and n_layers (positive integers), got {spec!r}")
    layers = meta.get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, int) and 0 <= x < spec["n_layers"] for x in layers):
        raise bad(f"layers must be a list of layer indices below n_layers={spec['n_layers']}, got {layers!r}")
    if not isinstance(meta.get("settings"), dict):
        raise bad("settings is not an object")
    return meta


def _read_tensors(file: Path, layers: list[int]) -> dict[str, torch.Tensor]:
    """The safetensors file, checked: readable, floating or bool tensors only, finite, per-layer tensors only
    for the editor's layers (shapes are checked against the method's ``tensor_spec`` by ``check_tensors``)."""
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: the editor folder is incomplete; save it again")
    try:
        tensors = load_file(str(file))
    except Exception as e:  # safetensors raises its own error types for truncated or malformed files
        raise ValueError(f"{file} is not a readable safetensors file ({e}); save the editor again") from None
    for name, t in tensors.items():
        if not (t.is_floating_point() or t.dtype == torch.bool):
            raise ValueError(f"{file}: tensor {name!r} has dtype {t.dtype}; editors store floating-point or "
                             "bool tensors only")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{file}: tensor {name!r} holds NaN or inf values")
        suffix = name.rsplit(".", 1)[-1]
        if suffix.isdigit() and not name.startswith("vf.") and int(suffix) not in layers:
            raise ValueError(f"{file}: tensor {name!r} is for layer {suffix}, which is not among the editor's "
                             f"layers {layers}")
    return tensors


def check_tensors(klass: type[Editor], tensors: dict[str, torch.Tensor], layers: list[int], d_model: int,
                  where: Path | str) -> None:
    """Refuse tensors that do not fit ``klass.tensor_spec``: a missing required tensor, a name the method does
    not declare, a wrong shape (``d_model`` and the method's own sizes, consistent across tensors) or dtype.
    The error names the folder, the method and each missing or unexpected tensor."""
    spec = klass.tensor_spec or ()
    expected: dict[str, TensorSpec] = {}
    prefixes = [s for s in spec if s.name.endswith("*")]
    for s in spec:
        if "{L}" in s.name:
            expected.update({s.name.replace("{L}", str(layer)): s for layer in layers})
        elif not s.name.endswith("*"):
            expected[s.name] = s
    missing = sorted(n for n, s in expected.items() if n not in tensors and not s.optional)
    missing += [s.name for s in prefixes if not s.optional and not any(n.startswith(s.name[:-1]) for n in tensors)]
    unexpected = sorted(n for n in tensors
                        if n not in expected and not any(n.startswith(s.name[:-1]) for s in prefixes))
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    sizes: dict[str, int] = {}
    for name, t in tensors.items():
        s = expected.get(name)
        if s is None:
            continue
        if (s.dtype == "bool") != (t.dtype == torch.bool):
            problems.append(f"{name} has dtype {t.dtype}, not {s.dtype}")
            continue
        if s.shape is None:
            continue
        want = [d_model if d == "d_model" else d for d in s.shape]
        ok = len(want) == t.dim()
        for want_d, got in zip(want, t.shape, strict=False):
            if not ok:
                break
            if isinstance(want_d, int):
                ok = want_d == got
            elif want_d != "*":
                ok = sizes.setdefault(want_d, int(got)) == got
        if not ok:
            shown = ", ".join(str(d) for d in s.shape)
            problems.append(f"{name} has shape {tuple(t.shape)}, not [{shown}] (d_model={d_model})")
    if problems:
        raise ValueError(f"{where}: its tensors do not fit a {klass.method!r} editor: {'; '.join(problems)}. Was "
                         "editor.json edited, or the folder saved by another method? Fit and save the editor again")


SINK_FACTOR = 4.0


def sink_threshold(token_norms: torch.Tensor) -> torch.Tensor:
    """Norm above which a position counts as an attention sink: ``SINK_FACTOR`` x the median token norm."""
    return (token_norms.float().median() * SINK_FACTOR).reshape(())


def check_layers(layers: list[int], n_layers: int) -> list[int]:
    """Validate and normalise layer indices (negative counts from the end), with a helpful error."""
    if len(layers) == 0:
        raise ValueError("No layers given: pass at least one layer index, e.g. layers=[-1]")
    out = []
    for layer in layers:
        idx = layer + n_layers if layer < 0 else layer
        if not 0 <= idx < n_layers:
            raise ValueError(f"Layer {layer} is out of range for a model with {n_layers} layers "
                             f"(valid: 0..{n_layers - 1}, or negative from the end)")
        out.append(int(idx))
    return sorted(set(out))


def check_strength(strength: float) -> float:
    """A finite float, or a ``ValueError`` saying what ``strength`` means."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"strength must be a number (0: no edit, 1: the fitted edit), not {strength!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"strength must be finite, not {strength!r}")
    return value


def check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or inf values; check the inputs (and the model dtype)")


@torch.no_grad()
def edit_magnitudes(model: Any, editor: Editor, text: str | torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Relative size of the edit, ``||edit(z) - z|| / ||z||``, per edited layer (rows) and token (columns).

    Runs ``text`` (tokenised as is, or a ``[1, pos]`` token tensor) once with the editor's hooks, each
    wrapped to record its change; the recorded edits compound layer to layer exactly as during
    generation. Returns (sizes, token labels).
    """
    from .generation import encode

    editor.model.check(model)
    if isinstance(text, torch.Tensor):
        tokens, mask = text.reshape(1, -1), torch.ones_like(text.reshape(1, -1))
    else:
        tokens, mask = encode(model, [text])
    _, edits = recorded_run(model, editor, tokens, mask)
    sizes = {name: (delta.norm(dim=-1) / norm.clamp_min(1e-12)) for name, (delta, norm) in edits.items()}
    tok = model.tokenizer
    labels = [tok.decode([t]) if tok is not None else str(t) for t in tokens[0].tolist()]
    return torch.stack([sizes[editor.hook_name(layer)] for layer in editor.layers]), labels


def recorded_run(model: Any, editor: Editor, tokens: torch.Tensor, mask: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Run ``tokens`` [1, pos] once with the editor's hooks, each wrapped to record its change (the edits
    compound layer to layer exactly as during generation). Returns the logits [1, pos, vocab] and, per hook
    name, the edit ``edit(z) - z`` [pos, d] and the norm ``||z||`` [pos] (float32, CPU)."""
    edits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(name: str, act: torch.Tensor, out: torch.Tensor) -> None:
        edits[name] = ((out - act)[0].detach().float().cpu(), act[0].detach().float().norm(dim=-1).cpu())

    logits = model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=observed_hooks(editor, record))
    return logits, edits


def observed_hooks(editor: Editor, observe: Callable[[str, torch.Tensor, torch.Tensor], None],
                   strength: float = 1.0) -> FwdHooks:
    """The editor's ``fwd_hooks(strength)``, each wrapped to call ``observe(hook_name, act, edited)`` after
    it edits (for analysis: the wrapped hooks edit exactly as the plain ones do)."""
    def wrap(name: str, fn: HookFn) -> HookFn:
        def observed(act: torch.Tensor, hook: Any) -> torch.Tensor:
            out = fn(act, hook)
            out = act if out is None else out
            observe(name, act, out)
            return out
        return observed

    return [(name, wrap(name, fn)) for name, fn in editor.fwd_hooks(strength)]


class RandomDirectionControl(Editor):
    """A control edit of equal size in a random direction: wherever ``base`` changes an activation by
    ``delta`` (per token), this adds ``||delta|| * r`` instead, ``r`` a fixed random unit vector per hook
    (seeded). Same layers, same positions, same norm per token, no learned direction: what an effect left
    over after this control owes to the base editor's *direction*, not to perturbing the model by that much.

    Not saved (it wraps a live editor); build it again from the base editor and the seed.
    """

    method = "random-direction"

    def __init__(self, base: Editor, seed: int = 0):
        super().__init__(model=base.model, layers=list(base.layers),
                         settings={"of": base.method, "seed": int(seed)}, tensors={})
        self.base = base

    def directions(self, names: list[str], d_model: int) -> dict[str, torch.Tensor]:
        """The unit vector per hook name (the same for the same seed and names)."""
        g = torch.Generator().manual_seed(int(self.settings["seed"]))
        out = {}
        for name in names:
            r = torch.randn(d_model, generator=g, dtype=torch.float64)
            out[name] = (r / r.norm()).float()
        return out

    def fwd_hooks(self, strength: float = 1.0) -> FwdHooks:
        pairs = self.base.fwd_hooks(strength)
        units = self.directions([name for name, _ in pairs], self.model.d_model)

        def swapped(name: str, fn: HookFn) -> HookFn:
            def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
                out = fn(act, hook)
                out = act if out is None else out
                size = (out.float() - act.float()).norm(dim=-1, keepdim=True)
                return (act.float() + size * units[name].to(act.device)).to(act.dtype)
            return hook

        return [(name, swapped(name, fn)) for name, fn in pairs]

    def hook_fn(self, layer: int) -> HookFn:
        raise TypeError("RandomDirectionControl edits through fwd_hooks(); it has no hook of its own")

    def save(self, path: str | Path) -> Path:
        raise TypeError("A RandomDirectionControl is not saved: save its base editor and rebuild it with the seed")
