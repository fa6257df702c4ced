"""The project's shipped data (``data/`` at the repository root, or ``$STEERLENS_DATA``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def data_dir() -> Path:
    env = os.environ.get("STEERLENS_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"steerlens data folder not found at {path}; set STEERLENS_DATA to the "
                                "repository's data/ folder")
    return path


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file, with errors that name the file and line; ``required`` fields must be present."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {path}")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
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


def shared_data_dir() -> Path:
    """The shared data folder beside the repository (``../shared/data``), or ``$STEERLENS_SHARED_DATA``.

    It holds TruthfulQA's development split and the true/false facts set, which are read from there
    and never copied into the repository.
    """
    env = os.environ.get("STEERLENS_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"Shared data not found at {path}; set STEERLENS_SHARED_DATA to its folder")
    return path


def truthfulqa_dev_path() -> Path:
    return shared_data_dir() / "truthfulqa" / "TruthfulQA_dev.csv"
