"""The data steerlens ships: prompt sets, contrast pairs, PaCE's concept list and stimuli, TruthfulQA's
development split and a true/false facts set.

In a source checkout it lives in ``data/`` at the repository root; in an installed wheel the same files
sit inside the package (``steerlens/_data``, mapped from ``data/`` at build time) and are found with
``importlib.resources``. ``$STEERLENS_DATA`` points steerlens at another copy.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any


def data_dir() -> Path:
    """The shipped data folder: ``$STEERLENS_DATA``, else the installed package's ``_data``, else the
    source checkout's ``data/``."""
    env = os.environ.get("STEERLENS_DATA")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise FileNotFoundError(f"STEERLENS_DATA points to {path}, which is not a folder")
        return path
    installed = Path(str(resources.files("steerlens") / "_data"))
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[1] / "data"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"steerlens' data was not found (looked in {installed} and {checkout}): the "
                            "installation is incomplete; reinstall steerlens, or set STEERLENS_DATA to a copy "
                            "of the repository's data/ folder")


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file, with errors that name the file and line; ``required`` fields must be present."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {path}")
    try:
        text = path.read_bytes().decode("utf-8")  # no newline translation: a lone \r does not end a line
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    rows = []
    # split on newlines only: str.splitlines also breaks at U+2028, U+0085, \x1c-\x1e, which JSON strings
    # written with ensure_ascii=False may hold
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i}: each line must be a JSON object")
        missing = [k for k in required if k not in row]
        if missing:
            raise ValueError(f"{path}:{i}: missing field(s) {missing}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows


def contrast_pairs(task: str) -> tuple[list[str], list[str]]:
    """Shipped contrastive pairs for ``task`` (``sentiment`` or ``toxicity``): (positive, negative) texts.

    Each row of ``data/pairs/<task>.jsonl`` has ``positive`` and ``negative`` fields: the desired and
    the undesired version of the same sentence.
    """
    path = data_dir() / "pairs" / f"{task}.jsonl"
    if not path.is_file():
        known = sorted(p.stem for p in (data_dir() / "pairs").glob("*.jsonl"))
        raise ValueError(f"No shipped pairs for task {task!r}; available: {known}")
    rows = read_jsonl(path, ("positive", "negative"))
    return [r["positive"] for r in rows], [r["negative"] for r in rows]


def truthfulqa_dev_path() -> Path:
    """TruthfulQA's development split (419 questions, official columns; Apache-2.0), shipped with steerlens."""
    return data_dir() / "truthfulqa" / "TruthfulQA_dev.csv"


def facts_path() -> Path:
    """The true/false facts set (``statement,label``), shipped with steerlens."""
    return data_dir() / "facts" / "facts_true_false.csv"
