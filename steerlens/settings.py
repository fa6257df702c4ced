"""Declared settings: each method says, in one place beside it, what each of its settings is.

A ``Setting`` names a setting and gives its type, what values are allowed (a range or a list of choices), its
default and one line of help. Every place a setting enters steerlens checks the value against it, before any
work: ``--set`` and ``--sweep`` (before the model loads), the keywords of a method's ``fit`` (before fitting),
``editor.json`` when a saved editor or a cache entry is loaded, and the cache key (which holds the checked,
canonical value, so ``alpha=1`` and ``alpha=1.0`` are one entry). A value of the wrong type, a non-finite number
or one outside the range is refused with a ``SettingError``: one line naming the method, the setting, the value
and what is allowed. A legal but extreme value (``extreme``) only warns: dose-response sweeps need them.

A method written outside steerlens declares its settings the same way::

    class MeanCentring(Editor):
        method = "meancentre"
        settings_spec = (Setting("alpha", "float", 1.0, "how much of the mean difference to add", low=0),)
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TYPES = ("float", "int", "bool", "str", "layers", "strings", "object")

# Layers in task defaults and ``--set layers=...`` are given for a 30-layer model and scaled to the model's depth.
REFERENCE_LAYERS = 30


def scaled_layers(layers: Iterable[int], n_layers: int) -> list[int]:
    """Layers given for a ``REFERENCE_LAYERS``-layer model, at the same relative depth of an ``n_layers`` one."""
    return sorted({min(n_layers - 1, round(la * n_layers / REFERENCE_LAYERS)) for la in layers})


class SettingError(ValueError):
    """A setting's value is not what its declaration allows (the message is one line that says what is)."""


class ExtremeSettingWarning(UserWarning):
    """A legal setting whose value is far outside the usual range (e.g. an edit larger than the activation)."""


@dataclass(frozen=True)
class Setting:
    """One declared setting of a method.

    ``type``: ``float``, ``int``, ``bool``, ``str``, ``layers`` (a list of layer indices for a 30-layer model;
    one integer is read as a list of one), ``strings`` (a list of strings) or ``object`` (a JSON object).
    ``low``/``high``: the allowed range of a number (``open_low``: the low end itself is not allowed).
    ``choices``: the allowed values. ``optional``: ``None`` is allowed (e.g. "no bound"). ``extreme``: a
    magnitude above which a legal value warns, with ``extreme_note`` saying what such a value does.
    ``recipe``: the setting enters through the method's task recipe (``--set``, ``--sweep``); ``saved``: it is
    kept in the fitted editor's ``editor.json``.
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    extreme: float | None = None
    extreme_note: str = ""
    recipe: bool = True
    saved: bool = True

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"Setting {self.name!r}: type must be one of {TYPES}, not {self.type!r}")

    def allowed(self) -> str:
        """What values are allowed, in words."""
        if self.choices is not None:
            text = "one of " + ", ".join(json.dumps(c) for c in self.choices)
        elif self.type in ("float", "int"):
            kind = "a finite number" if self.type == "float" else "an integer"
            lo = None if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
            hi = None if self.high is None else f"<= {self.high:g}"
            text = kind + ("" if lo is None and hi is None else " " + " and ".join(x for x in (lo, hi) if x))
        elif self.type == "layers":
            text = f"a list of layer indices 0-{REFERENCE_LAYERS - 1} (for a {REFERENCE_LAYERS}-layer model, scaled " \
                   "to the model's depth), e.g. [9,15]"
        else:
            text = {"bool": "true or false", "str": "a non-empty string", "strings": "a list of strings",
                    "object": "a JSON object"}[self.type]
        return text + (" (or null)" if self.optional else "")

    def check(self, value: Any, method: str = "") -> Any:
        """The canonical value (ints become floats for float settings, one layer becomes a list), or a
        ``SettingError``."""
        if value is None and self.optional:
            return None
        try:
            out = self._coerce(value)
        except _Bad:
            raise SettingError(self._message(value)) from None
        if self.choices is not None and out not in self.choices:
            raise SettingError(self._message(value))
        return out

    def _coerce(self, v: Any) -> Any:
        t = self.type
        if t == "bool":
            if isinstance(v, bool):
                return v
            raise _Bad
        if t in ("float", "int"):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise _Bad
            if not math.isfinite(v):
                raise _Bad
            if t == "int":
                if isinstance(v, float) and not v.is_integer():
                    raise _Bad
                v = int(v)
            else:
                v = float(v)
            if self.low is not None and (v < self.low or (self.open_low and v == self.low)):
                raise _Bad
            if self.high is not None and v > self.high:
                raise _Bad
            return v
        if t == "str":
            if not isinstance(v, str) or not v.strip():
                raise _Bad
            return v
        if t == "layers":
            if isinstance(v, int) and not isinstance(v, bool):
                v = [v]
            if (not isinstance(v, list | tuple) or not v
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                    or not all(0 <= x < REFERENCE_LAYERS for x in v)):
                raise _Bad
            return sorted(set(int(x) for x in v))
        if t == "strings":
            if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
                raise _Bad
            return list(v)
        if not isinstance(v, dict):  # object
            raise _Bad
        return v

    def _message(self, value: Any) -> str:
        return f"setting {self.name!r} = {_show(value)} is not allowed: it must be {self.allowed()}"

    def is_extreme(self, value: Any) -> bool:
        return (self.extreme is not None and isinstance(value, int | float) and not isinstance(value, bool)
                and abs(value) > self.extreme)


class _Bad(Exception):
    pass


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_value(text: str) -> Any:
    """A ``--set`` / ``--sweep`` value: JSON where it parses (numbers, lists, true/false/null), else the text
    itself (so ``positions=generated`` needs no quotes). ``NaN`` and ``Infinity`` parse as numbers and are
    then refused by the declaration."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text.strip()


def by_name(spec: Iterable[Setting]) -> dict[str, Setting]:
    return {s.name: s for s in spec}


def check_settings(spec: Iterable[Setting], values: Mapping[str, Any], method: str, *, recipe: bool | None = True,
                   warn: bool = True) -> dict[str, Any]:
    """``values`` checked against ``spec``: unknown names and disallowed values raise ``SettingError`` (one
    line); extreme values warn. ``recipe=True`` accepts the recipe's settings (``--set``), ``False`` the saved
    ones (``editor.json``), ``None`` any declared one. Returns the canonical values."""
    known = {s.name: s for s in spec if recipe is None or (s.recipe if recipe else s.saved)}
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            what = "setting" if recipe else "saved setting"
            raise SettingError(f"{method}: unknown {what} {name!r}; known: {', '.join(sorted(known)) or 'none'}")
        try:
            out[name] = known[name].check(value)
        except SettingError as e:
            raise SettingError(f"{method}: {e}") from None
        if warn and known[name].is_extreme(out[name]):
            s = known[name]
            warnings.warn(f"{method}: {name}={out[name]:g} is legal but extreme (|{name}| > {s.extreme:g}"
                          f"{': ' + s.extreme_note if s.extreme_note else ''})", ExtremeSettingWarning, stacklevel=3)
    return out


def describe(spec: Iterable[Setting], defaults: Mapping[str, Any] | None = None) -> str:
    """A table of the settings: name, type, what is allowed, default, help (``steerlens methods``)."""
    lines = []
    for s in spec:
        if not s.recipe:
            continue
        default = (defaults or {}).get(s.name, s.default)
        extreme = f"; above {s.extreme:g} warns" if s.extreme is not None else ""
        lines.append(f"  {s.name:<16} {_show(default):<20} {s.help} ({s.allowed()}{extreme})")
    return "\n".join(lines)
