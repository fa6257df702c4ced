"""Writing files so that an interrupted write never leaves a file that a later run trusts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` in one step.

    On an exception (or Ctrl-C) the temporary file is removed and ``path`` keeps its old content (or stays
    absent). Example: ``with atomic_file(p) as tmp: save_file(tensors, str(tmp))``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def cache_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an inter-process lock (``filelock``) while building the cache entry ``path``, so two processes
    (two notebooks, two CLI runs) never write the same entry at once: the second waits, then finds the entry
    built. Says so on stderr when it has to wait. The lock file lives in a ``.locks`` folder beside the entry
    (as in the Hugging Face cache), so the cache folder itself holds entries only."""
    import sys

    from filelock import FileLock, Timeout

    path = Path(path)
    locks = path.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{path.name}.lock"))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        print(f"steerlens: another process is {what} ({path}); waiting for it to finish", file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def content_key(*parts: Any) -> str:
    """A short digest of ``parts`` (JSON-serialisable; other objects by ``str``), for content-addressed caches."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def memo(path: str | Path, make: Callable[[], T], save: Callable[[T, Path], None], load: Callable[[Path], T]) -> T:
    """The value cached at ``path`` (``load``), or ``make()`` saved there atomically (``save``) under
    ``cache_lock``. A file that fails to load is made again (a cache is never trusted over a rebuild)."""
    path = Path(path)

    def read() -> tuple[bool, Any]:
        if not path.is_file():
            return False, None
        try:
            return True, load(path)
        except Exception:  # noqa: BLE001  (a damaged or foreign cache file: rebuild it)
            return False, None

    found, value = read()
    if found:
        return value
    with cache_lock(path, "building the same cache entry"):
        found, value = read()
        if found:
            return value
        value = make()
        with atomic_file(path) as tmp:
            save(value, tmp)
    return value
