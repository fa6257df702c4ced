"""PaCE: Parsimonious Concept Engineering (Luo et al., NeurIPS 2024, arXiv 2406.04331).

An activation ``z`` is decomposed over a dictionary of concept atoms (paper Eq. 2-3):

    z = D c + r,     c = argmin 1/2 ||z/|z| - D c||^2 + a (t ||c||_1 + (1 - t)/2 ||c||^2)

with unit-norm atoms (each the mean activation of a concept's stimuli, normalised) and the target
normalised too; the coefficients are rescaled by ``||z||`` to undo that. The undesirable concepts' part
is removed and everything else, the residual ``r`` included, is kept (paper Eq. 4):

    z' = z - ||z|| * D_U c_U

Solving uses the batched working-set elastic net in ``steerlens.solvers`` over all token positions of
a forward pass at once (the reference code instead runs a dense least-squares solve per activation).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..activations import collect_activations
from ..data import data_dir, read_jsonl
from ..editing import (
    POSITIONS,
    Editor,
    HookFn,
    ModelSpec,
    TensorSpec,
    check_finite,
    check_layers,
    checked_settings,
    position_mask,
    register,
    resid_hook_name,
    sink_threshold,
)
from ..files import atomic_file, cache_lock
from ..generation import encode
from ..settings import Setting, scaled_layers
from ..solvers import Dictionary, elastic_net, lasso, omp

Solver = Literal["enet", "lasso", "omp"]
MEAN_ATOM = "<mean>"  # the shared atom of a centred dictionary (benign)


@dataclass
class ConceptDictionary:
    """Concept atoms per layer (mean stimulus activation, not normalised), in frequency order.

    ``partitions`` maps a task name to the indices of its undesirable concepts.
    """

    concepts: list[str]
    atoms: dict[int, Float[torch.Tensor, "k d"]]
    model: ModelSpec
    settings: dict[str, Any] = field(default_factory=dict)
    partitions: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.concepts:
            raise ValueError("A concept dictionary needs at least one concept")
        for layer, a in self.atoms.items():
            if a.shape != (len(self.concepts), self.model.d_model):
                raise ValueError(f"Atoms at layer {layer} have shape {tuple(a.shape)}, expected "
                                 f"({len(self.concepts)}, {self.model.d_model})")

    @classmethod
    def build(cls, model: Any, stimuli: Mapping[str, Sequence[str]], layers: Sequence[int],
              position: str = "mean", batch_size: int = 32, progress: bool = True) -> ConceptDictionary:
        """Atoms = mean over each concept's stimuli of the activation (``position`` rule) at each layer."""
        layers = check_layers(list(layers), model.cfg.n_layers)
        concepts = [c for c, s in stimuli.items() if len(s) > 0]
        if not concepts:
            raise ValueError("No concept has any stimulus")
        texts = [t for c in concepts for t in stimuli[c]]
        owner = torch.tensor([i for i, c in enumerate(concepts) for _ in stimuli[c]])
        acts = collect_activations(model, texts, layers=layers, position=position, batch_size=batch_size,
                                   progress=progress)
        atoms = {}
        counts = torch.bincount(owner, minlength=len(concepts)).float()[:, None]
        for layer in layers:
            a = acts[resid_hook_name(layer)]
            summed = torch.zeros(len(concepts), a.shape[1]).index_add_(0, owner, a)
            atoms[layer] = summed / counts
            check_finite(atoms[layer], f"concept atoms at layer {layer}")
        settings = {"position": position, "stimuli_per_concept": float(counts.mean())}
        return cls(concepts, atoms, ModelSpec.of(model), settings)

    def unit_atoms(self, layer: int, n_concepts: int | None = None) -> Float[torch.Tensor, "d k"]:
        """The first ``n_concepts`` atoms (by frequency) at ``layer``, unit-normalised, as columns."""
        if layer not in self.atoms:
            raise ValueError(f"The dictionary has no atoms at layer {layer}; it has {sorted(self.atoms)}")
        a = self.atoms[layer][:n_concepts]
        return (a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)).T.contiguous()

    def set_partition(self, task: str, undesirable: Iterable[int | str]) -> list[int]:
        """Label concepts (indices or names) undesirable for ``task``; returns the sorted indices."""
        index = {c: i for i, c in enumerate(self.concepts)}
        out = set()
        for u in undesirable:
            if isinstance(u, str):
                if u not in index:
                    raise ValueError(f"Unknown concept {u!r}")
                out.add(index[u])
            else:
                if not 0 <= int(u) < len(self.concepts):
                    raise ValueError(f"Concept index {u} out of range")
                out.add(int(u))
        self.partitions[task] = sorted(out)
        return self.partitions[task]

    def save(self, path: str | Path, dtype: torch.dtype = torch.float32) -> Path:
        """Write ``atoms.safetensors`` then ``dictionary.json`` (each renamed into place whole; the JSON,
        which ``load`` looks for, last). ``dtype=torch.float16`` halves the size (shipped dictionaries)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "dictionary.json").unlink(missing_ok=True)
        with atomic_file(path / "atoms.safetensors") as tmp:
            save_file({f"atoms.{la}": a.to(dtype).contiguous() for la, a in self.atoms.items()}, str(tmp))
        meta = {"concepts": self.concepts, "model": vars(self.model), "settings": self.settings,
                "partitions": self.partitions, "layers": sorted(self.atoms)}
        with atomic_file(path / "dictionary.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConceptDictionary:
        path = Path(path)
        if not (path / "dictionary.json").is_file():
            raise FileNotFoundError(f"No concept dictionary at {path}")
        meta = json.loads((path / "dictionary.json").read_text())
        tensors = load_file(str(path / "atoms.safetensors"))
        atoms = {int(k.split(".")[1]): v.float() for k, v in tensors.items()}  # shipped atoms are float16
        return cls(meta["concepts"], atoms, ModelSpec(**meta["model"]), meta["settings"], meta["partitions"])


# -- stimuli and the default dictionary -----------------------------------------------------------------
def shipped_concepts(limit: int | None = None) -> list[str]:
    """Concepts of ``data/concepts/concepts.tsv``: the tasks' concepts first, then by word frequency,
    so every prefix (``limit``) keeps the concepts the shipped tasks need."""
    rows = [line.split("\t") for line in (data_dir() / "concepts" / "concepts.tsv").read_text().splitlines()[1:]]
    rows.sort(key=lambda r: (not r[2].startswith("task") and ",task" not in r[2], int(r[0])))
    return [r[1] for r in rows][:limit]


def template_stimuli(concepts: Sequence[str]) -> dict[str, list[str]]:
    """Each concept in the shipped frames (``data/concepts/frames.txt``), the concept as the last word."""
    lines = (data_dir() / "concepts" / "frames.txt").read_text().splitlines()
    frames = [f for f in lines if f.strip() and not f.startswith("#")]
    return {c: [f.format(c=c) for f in frames] for c in concepts}


def read_stimuli(path: str | Path) -> dict[str, list[str]]:
    """A stimuli JSONL file (``{"concept": ..., "stimuli": [...]}`` per line, e.g. from
    ``tools/generate_stimuli.py``); concepts without stimuli are refused, not skipped."""
    out = {}
    for i, row in enumerate(read_jsonl(path, ("concept", "stimuli")), 1):
        if not isinstance(row["stimuli"], list) or not row["stimuli"]:
            raise ValueError(f"{path}:{i}: concept {row['concept']!r} has no stimuli")
        out[str(row["concept"])] = [str(t) for t in row["stimuli"]]
    return out


def cut_after_word(concept: str, sentences: Sequence[str]) -> list[str]:
    """Each sentence up to the end of its first use of ``concept`` (a suffix such as -s or -ed included);
    sentences that do not use it are dropped."""
    word = re.compile(rf"(?<![a-zA-Z]){re.escape(concept)}[a-zA-Z]*", re.I)
    return [s[:m.end()] for s in sentences if (m := word.search(s)) is not None]


DEFAULT_LAYERS = (6, 9, 12, 15, 18, 21)


def stimuli_path(stimuli: str | Path) -> Path | None:
    """``"frames"`` -> None (the shipped frames), ``"model"`` -> the shipped model-written stimuli
    (``data/concepts/stimuli.jsonl``), anything else -> that JSONL file."""
    if stimuli == "frames":
        return None
    path = data_dir() / "concepts" / "stimuli.jsonl" if stimuli == "model" else Path(stimuli)
    if not path.is_file():
        raise FileNotFoundError(f"No stimuli file at {path}; use stimuli='frames', 'model' or a JSONL path "
                                "(see tools/generate_stimuli.py)")
    return path


def stimuli_texts(stimuli: str | Path) -> dict[str, list[str]]:
    """The stimulus sentences of every shipped concept: ``"frames"``, ``"model"`` or a stimuli JSONL path
    (as ``default_dictionary`` reads them, whole sentences)."""
    source = stimuli_path(stimuli)
    return template_stimuli(shipped_concepts()) if source is None else read_stimuli(source)


def default_dictionary(model: Any, n_concepts: int | None = None, layers: Sequence[int] = DEFAULT_LAYERS,
                       stimuli: str | Path | None = "frames", position: str = "last",
                       progress: bool = True) -> ConceptDictionary:
    """The shipped concept dictionary for ``model``: built once, then loaded from
    ``cache_dir()/dictionaries``; partitions for the shipped tasks are added by the curated partitioner
    (``detox``, ``sentiment``, ``truthfulqa``).

    ``stimuli``: ``"frames"`` (default; the concept as the last word of ten fixed frames), ``"model"``
    (sentences the default model wrote, ``data/concepts/stimuli.jsonl``) or a stimuli JSONL path.
    ``position``: where each stimulus is read: ``"last"`` token, ``"mean"`` over its tokens, or ``"word"``:
    at the concept word itself (each sentence cut after its first use of the word, inflections included,
    then read at its last token). The atom is the mean over the concept's stimuli. The frames end with
    the concept, so ``"last"`` and ``"word"`` read them alike.

    ``n_concepts``: the first N concepts (the tasks' concepts come first). When the whole dictionary with
    the same stimuli, reading and layers is cached, its first N atoms are taken instead of building.
    """
    import hashlib

    from ..models import cache_dir

    source = stimuli_path("frames" if stimuli is None else stimuli)
    every = template_stimuli(shipped_concepts()) if source is None else read_stimuli(source)
    reading = position
    if position == "word":
        every = {c: cut_after_word(c, texts) for c, texts in every.items()}
        position = "last"
    stim = dict(list(every.items())[:n_concepts])
    unused = [c for c, texts in stim.items() if not texts]
    if unused:
        raise ValueError(f"No stimulus of {unused[:5]} uses the concept word; fix the stimuli or read them "
                         "with position='mean'")
    layers = check_layers(list(layers), model.cfg.n_layers)
    name = ModelSpec.of(model).name

    def cached(chosen: dict[str, list[str]]) -> Path:
        # the last-token reading keeps the key it had before readings existed, so cached dictionaries stay valid
        parts: list[Any] = [chosen, layers, name] + ([] if position == "last" else [position])
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
        return cache_dir() / "dictionaries" / f"{name}-{len(chosen)}-{key}"

    path = cached(stim)
    whole = cached(every)
    shipped = SHIPPED_DIR / whole.name
    # the whole dictionary, built earlier or shipped with steerlens: a prefix of it is sliced, not built
    source = whole if (whole / "dictionary.json").is_file() else shipped if _matches_shipped(shipped, model) else None
    if (path / "dictionary.json").is_file():
        dic = ConceptDictionary.load(path)
        dic.model.check(model, "cached concept dictionary")
    elif source is not None and len(stim) == len(every):
        dic = ConceptDictionary.load(source)
        dic.model.check(model, "cached concept dictionary")
    elif source is not None:
        # a prefix of a dictionary already built: an atom depends on its own concept's stimuli only
        full = ConceptDictionary.load(source)
        full.model.check(model, "cached concept dictionary")
        k = len(stim)
        dic = ConceptDictionary(full.concepts[:k], {la: a[:k] for la, a in full.atoms.items()}, full.model,
                                {**full.settings, "stimuli_per_concept": sum(map(len, stim.values())) / k,
                                 "sliced_from": source.name})
    else:
        with cache_lock(path, "building the same concept dictionary"):
            if (path / "dictionary.json").is_file():  # built by another process while this one waited
                dic = ConceptDictionary.load(path)
            else:
                if progress:
                    print(f"steerlens: building PaCE's concept dictionary ({len(stim)} concepts, "
                          f"{sum(map(len, stim.values()))} stimuli, layers {layers}) for {name}, in chunks that an "
                          f"interrupted build resumes from; cached in {path} for later runs", file=sys.stderr)
                dic = build_in_chunks(model, stim, layers, position, path.with_name(path.name + ".partial"),
                                      progress)
                stimuli_name = "templates (data/concepts/frames.txt)" if source is None else \
                    "model" if stimuli == "model" else str(source)
                dic.settings.update(stimuli=stimuli_name, position=reading)
                dic.save(path)
        shutil.rmtree(path.with_name(path.name + ".partial"), ignore_errors=True)
    dic.settings["whole_name"] = whole.name  # the whole dictionary this one is (a prefix of); its cache name
    for task, group in TASK_GROUPS.items():
        words = tagged_concepts(group)
        if task not in dic.partitions and any(w in dic.concepts for w in words):
            curated_partition(dic, task, words, quiet=True)
    return dic


BUILD_CHUNK = 200  # concepts per saved chunk of a dictionary build


def build_in_chunks(model: Any, stimuli: Mapping[str, Sequence[str]], layers: Sequence[int], position: str,
                    partial: Path, progress: bool = True) -> ConceptDictionary:
    """``ConceptDictionary.build`` over ``BUILD_CHUNK`` concepts at a time, each chunk's atoms saved in
    ``partial`` (whole files, renamed into place) so that an interrupted build resumes at the first missing
    chunk. An atom depends on its own concept's stimuli only, so the result is the one-piece build's (up to
    float rounding from batching)."""
    names = list(stimuli)
    layers = check_layers(list(layers), model.cfg.n_layers)
    starts = range(0, len(names), BUILD_CHUNK)
    pieces: dict[int, list[torch.Tensor]] = {la: [] for la in layers}
    for start in tqdm(starts, desc="dictionary chunks", disable=not progress or len(starts) < 2, unit="chunk"):
        chunk = names[start:start + BUILD_CHUNK]
        file = partial / f"{start:06d}-{start + len(chunk):06d}.safetensors"
        if file.is_file():
            part = load_file(str(file))
        else:
            built = ConceptDictionary.build(model, {c: stimuli[c] for c in chunk}, layers, position=position,
                                            batch_size=64, progress=progress and len(starts) < 2)
            part = {f"atoms.{la}": a for la, a in built.atoms.items()}
            with atomic_file(file) as tmp:
                save_file(part, str(tmp))
        for la in layers:
            pieces[la].append(part[f"atoms.{la}"])
    counts = [len(stimuli[c]) for c in names]
    return ConceptDictionary(names, {la: torch.cat(p) for la, p in pieces.items()}, ModelSpec.of(model),
                             {"position": position, "stimuli_per_concept": sum(counts) / len(counts)})


# Prebuilt dictionaries shipped in the package (float16 atoms), named like their cache entries: the default
# model's detox dictionary, so that PaCE runs on a fresh install without a 15-minute build.
# Rebuild with ``python tools/ship_artefacts.py``.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "dictionaries"


def _matches_shipped(path: Path, model: Any) -> bool:
    """A shipped dictionary exists at ``path`` and was built on this model (same shape and weights)."""
    if not (path / "dictionary.json").is_file():
        return False
    spec = ModelSpec(**json.loads((path / "dictionary.json").read_text())["model"])
    try:
        spec.check(model, "shipped concept dictionary")
    except ValueError:
        return False
    return True


TASK_GROUPS = {"detox": "toxicity", "sentiment": "negative_sentiment", "truthfulqa": "falsehood"}
# which concepts a task's partition marks undesirable: the curated list, the task's offline classifier, or both
PARTITIONS = ("curated", "classifier", "union")


def tagged_concepts(group: str) -> list[str]:
    """Concepts tagged ``task:<group>`` in ``data/concepts/concepts.tsv`` (the curated undesirable list)."""
    rows = [line.split("\t") for line in (data_dir() / "concepts" / "concepts.tsv").read_text().splitlines()[1:]]
    words = [r[1] for r in rows if f"task:{group}" in r[2]]
    if not words:
        raise ValueError(f"No concept is tagged task:{group}")
    return words


# -- partitioners ---------------------------------------------------------------------------------------
def curated_partition(dictionary: ConceptDictionary, task: str, undesirable_words: Iterable[str],
                      quiet: bool = False) -> list[int]:
    """Undesirable = the listed words that are in the dictionary (others are reported, not silently dropped)."""
    words = set(undesirable_words)
    present = [w for w in dictionary.concepts if w in words]
    missing = sorted(words - set(present))
    if not present:
        raise ValueError(f"None of the {len(words)} curated words is a concept of this dictionary")
    if missing and not quiet:
        print(f"curated partition {task!r}: {len(missing)} word(s) not in the dictionary: {missing[:10]}")
    return dictionary.set_partition(task, present)


def concept_scores(stimuli: Mapping[str, Sequence[str]],
                   scorer: Callable[[list[str]], Sequence[float]]) -> dict[str, float]:
    """The mean ``scorer`` value of each concept's stimuli (one call over all sentences): how undesirable a
    text classifier finds the sentences that define the concept."""
    names = [c for c, texts in stimuli.items() if texts]
    texts = [t for c in names for t in stimuli[c]]
    if not texts:
        raise ValueError("No stimuli to score")
    values = list(scorer(texts))
    if len(values) != len(texts):
        raise ValueError(f"The scorer returned {len(values)} values for {len(texts)} texts")
    out, i = {}, 0
    for c in names:
        n = len(stimuli[c])
        out[c] = float(sum(values[i:i + n]) / n)
        i += n
    return out


def classifier_partition(dictionary: ConceptDictionary, task: str, scores: Mapping[str, float],
                         threshold: float = 0.5) -> list[int]:
    """Undesirable = the concepts whose stimuli a classifier scores above ``threshold`` on average
    (``concept_scores``): a partition from measurement. The paper labels concepts with an LLM; an offline
    classifier is the stand-in here. Concepts without a score are left benign, and said so."""
    unscored = [c for c in dictionary.concepts if c not in scores and c != MEAN_ATOM]
    if unscored:
        print(f"classifier partition {task!r}: {len(unscored)} concept(s) have no score and stay benign: "
              f"{unscored[:5]}")
    chosen = [i for i, c in enumerate(dictionary.concepts) if scores.get(c, -math.inf) > threshold]
    if not chosen:
        raise ValueError(f"No concept scores above {threshold}; lower the threshold or check the scorer")
    return dictionary.set_partition(task, chosen)


@torch.no_grad()
def similarity_partition(model: Any, dictionary: ConceptDictionary, task: str, description: str, layer: int,
                         top_n: int = 50) -> list[int]:
    """Undesirable = the ``top_n`` concepts whose atoms are most cosine-similar to the description's
    activation (token mean at ``layer``), both centred on the dictionary's mean atom."""
    emb = collect_activations(model, [description], layers=[layer], position="mean", progress=False)
    e = emb[resid_hook_name(layer)][0]
    atoms = dictionary.atoms[layer]
    centre = atoms.mean(0)
    sims = torch.nn.functional.cosine_similarity(atoms - centre, (e - centre)[None], dim=-1)
    return dictionary.set_partition(task, sims.topk(min(top_n, len(sims))).indices.tolist())


def expand_partition(dictionary: ConceptDictionary, task: str, n: int, layer: int) -> list[int]:
    """Grow ``task``'s undesirable concepts by their ``n`` nearest neighbours: the other concepts whose
    atoms (centred on the mean atom) are most cosine-similar to the mean of the undesirable ones."""
    if task not in dictionary.partitions or not dictionary.partitions[task]:
        raise ValueError(f"No undesirable concepts for task {task!r} to expand; partition it first")
    if layer not in dictionary.atoms:
        raise ValueError(f"The dictionary has no atoms at layer {layer}; it has {sorted(dictionary.atoms)}")
    atoms = dictionary.atoms[layer]
    centred = atoms - atoms.mean(0)
    undesirable = dictionary.partitions[task]
    sims = torch.nn.functional.cosine_similarity(centred, centred[undesirable].mean(0)[None], dim=-1)
    sims[undesirable] = -torch.inf
    extra = sims.topk(min(n, len(sims) - len(undesirable))).indices.tolist()
    return dictionary.set_partition(task, [*undesirable, *extra])


# -- the editor -----------------------------------------------------------------------------------------
@register
class PaCEEditor(Editor):
    """Remove the undesirable concepts' part of each token's activation, keep the rest (paper Eq. 4).

    Settings: ``alpha``, ``l1_ratio`` (paper: 0.05, 0.95), ``solver`` (enet, lasso, omp), ``n_nonzero``
    (OMP), ``task``, ``concepts`` (names, for plots), ``positions`` (all, prompt, generated). Tensors per
    layer: unit atoms ``atoms.{L}`` [d, k], and ``undesirable`` [k] (bool).
    """

    method = "pace"
    tasks = ("detox", "sentiment", "truthfulqa")  # a concept partition per task (TASK_GROUPS)
    settings_spec = (
        Setting("layers", "layers", [9, 15, 21], "the layers whose residual stream is edited", saved=False),
        Setting("alpha", "float", 0.05, "the elastic net's penalty (paper: 0.05)", low=0.0, open_low=True),
        Setting("l1_ratio", "float", 0.95, "the elastic net's L1 share (paper: 0.95)", low=0.0, high=1.0),
        Setting("n_concepts", "int", None, "the first N concepts of the dictionary (null: all)", low=1,
                optional=True, saved=False),
        Setting("centre", "bool", True, "atoms as the mean atom plus each concept's own part"),
        Setting("positions", "str", "all", "which positions are edited", choices=POSITIONS),
        # one dictionary for every task, as in the paper (a partition per task): the shipped one, read at the word
        Setting("stimuli", "str", "model", "the concepts' stimuli: model (shipped), frames, or a JSONL path",
                saved=False),
        Setting("atom_position", "str", "word", "where each stimulus is read", choices=("last", "mean", "word"),
                saved=False),
        Setting("expand", "int", 0, "add each undesirable concept's N nearest neighbours to the partition", low=0,
                saved=False),
        Setting("partition", "str", "curated", "which concepts are undesirable", choices=PARTITIONS, saved=False),
        Setting("solver", "str", "enet", "the sparse coder", choices=("enet", "lasso", "omp"), recipe=False),
        Setting("n_nonzero", "int", 32, "OMP's number of atoms", low=1, recipe=False),
        Setting("task", "str", None, "the dictionary partition removed", recipe=False),
        Setting("concepts", "strings", None, "the atoms' concept names", recipe=False),
    )
    tensor_spec = (TensorSpec("undesirable", ("k",), dtype="bool"), TensorSpec("atoms.{L}", ("d_model", "k")),
                   TensorSpec("sink_norm.{L}", (), optional=True))
    # detox: the model-written stimuli read at the concept word, the curated concepts plus their 25 nearest
    # neighbours, at six layers (chosen on data/detox/dev.jsonl, benchmarks/pace_detox.py); removed at every
    # position, prompt and response (chosen by 5-fold cross-validation on the 600 prompts of data/detox/cv.jsonl
    # against the prompt-only, classifier and union partitions, benchmarks/pace_cv.py).
    task_defaults = {"detox": {"stimuli": "model", "atom_position": "word", "expand": 25, "positions": "all",
                               "layers": [6, 9, 12, 15, 18, 21]}}
    reads_shipped_data = True  # the concept list, whatever the training rows
    demo_notes = {"detox": (
        "PaCE removes only the concepts its partition marks undesirable and keeps the rest of each activation; "
        "its line names the concepts it took out. Its detox default edits every token, the prompt's and the "
        "answer's, at six layers (the README's PaCE section says how much that helps on prompts it was not "
        "chosen on).")}

    @classmethod
    def for_task(cls, model: Any, task: Any, settings: dict[str, Any]) -> PaCEEditor:
        """The concept dictionary (shipped, cached or built), the task's partition (curated, labelled by the
        task's offline classifier ``Task.undesirability``, or both), optionally expanded by nearest neighbours."""
        s = settings
        if not task.shipped:
            print("pace: the training prompts are not used; PaCE removes the concepts the curated partition "
                  "marks undesirable for the task (data/concepts/concepts.tsv)")
        # the shipped layers (scaled to this model's depth) plus any the settings ask for
        layers = sorted(set(scaled_layers(DEFAULT_LAYERS, model.cfg.n_layers)) | set(s["layers"]))
        dic = default_dictionary(model, n_concepts=s["n_concepts"], layers=layers, stimuli=s["stimuli"],
                                 position=s["atom_position"], progress=task.progress)
        if task.name not in dic.partitions:
            curated_partition(dic, task.name, tagged_concepts(TASK_GROUPS[task.name]))
        if s["partition"] != "curated":  # labelled by the task's offline classifier (alone, or with the curated)
            curated = list(dic.partitions[task.name])
            scores = concept_scores(stimuli_texts(s["stimuli"]), task.undesirability)
            classifier_partition(dic, task.name, scores)
            if s["partition"] == "union":
                dic.set_partition(task.name, curated + dic.partitions[task.name])
        if s["expand"]:  # the curated concepts' nearest neighbours, at the dictionary's middle layer
            expand_partition(dic, task.name, int(s["expand"]), sorted(dic.atoms)[len(dic.atoms) // 2])
        return cls.from_dictionary(dic, task.name, layers=s["layers"], alpha=s["alpha"], l1_ratio=s["l1_ratio"],
                                   centre=s["centre"], positions=s["positions"])

    @classmethod
    @checked_settings
    def from_dictionary(cls, dictionary: ConceptDictionary, task: str, layers: Sequence[int],
                        n_concepts: int | None = None, alpha: float = 0.05, l1_ratio: float = 0.95,
                        solver: Solver = "enet", n_nonzero: int = 32, centre: bool = True,
                        positions: str = "all") -> PaCEEditor:
        """Build the editor from the first ``n_concepts`` atoms at each layer, plus the task's undesirable
        concepts wherever they rank (a smaller dictionary has fewer benign concepts, never fewer to remove).

        ``positions``: edit ``"all"`` positions, only the ``"prompt"`` or only the ``"generated"`` ones
        (the prompt's end is known inside ``steerlens.generate`` or ``steerlens.editing.prompt_span``).
        Solving only the selected positions also saves their share of the solver's time.

        ``centre=True`` (default) writes each concept atom as the dictionary's mean atom plus the concept's
        own part: the atoms become ``[mean, a_1 - mean, ..., a_k - mean]`` (unit-normalised), which span
        the same space as the raw atoms. The shared part (what every stimulus has in common: the frame,
        "a word in a sentence") is one benign atom, so removing a concept removes only what is specific to
        it, and the dictionary is far less coherent (mean |cos| 0.10 instead of 0.70 at layer 15), which
        makes the elastic net both sharper and faster. ``centre=False`` is the paper's raw dictionary.
        """
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")
        if task not in dictionary.partitions:
            raise ValueError(f"The dictionary has no partition for task {task!r}; known: "
                             f"{sorted(dictionary.partitions)}. Make one with curated_partition or "
                             "similarity_partition.")
        layers = check_layers(list(layers), dictionary.model.n_layers)
        k = len(dictionary.concepts) if n_concepts is None else min(n_concepts, len(dictionary.concepts))
        if k < 1:
            raise ValueError(f"n_concepts must be at least 1, not {n_concepts}")
        undesirable = set(dictionary.partitions[task])
        keep = sorted(set(range(k)) | undesirable)
        mask = torch.tensor([i in undesirable for i in keep], dtype=torch.bool)
        names = [dictionary.concepts[i] for i in keep]
        if centre:
            mask = torch.cat([torch.zeros(1, dtype=torch.bool), mask])
            names = [MEAN_ATOM, *names]
        tensors: dict[str, torch.Tensor] = {"undesirable": mask}
        for layer in layers:
            raw = dictionary.atoms[layer][keep]
            atoms = torch.cat([raw.mean(0, keepdim=True), raw - raw.mean(0)]) if centre else raw
            tensors[f"atoms.{layer}"] = (atoms / atoms.norm(dim=-1, keepdim=True).clamp_min(1e-12)).T.contiguous()
            tensors[f"sink_norm.{layer}"] = sink_threshold(raw.norm(dim=-1))
        settings = {"alpha": alpha, "l1_ratio": l1_ratio, "solver": solver, "n_nonzero": n_nonzero,
                    "task": task, "concepts": names, "centre": centre, "positions": positions}
        return cls(model=dictionary.model, layers=layers, settings=settings, tensors=tensors)

    def _dictionary(self, layer: int) -> Dictionary:
        cache = self.__dict__.setdefault("_dicts", {})
        atoms = self.tensors[f"atoms.{layer}"]
        if layer not in cache or cache[layer].atoms.device != atoms.device:
            cache[layer] = Dictionary.from_atoms(atoms)
        return cache[layer]

    @torch.no_grad()
    def coefficients(self, layer: int, z: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n k"]:
        """Concept coefficients of each row of ``z`` in activation units (rescaled by ``||z||``).

        Not differentiated: in a backward pass through the hook the removed part is a constant.
        """
        norms = z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        y = z / norms
        dic = self._dictionary(layer)
        s = self.settings
        if s["solver"] == "enet":
            c = elastic_net(dic, y, s["alpha"], s["l1_ratio"], tol=1e-4)
        elif s["solver"] == "lasso":
            c = lasso(dic, y, s["alpha"], tol=1e-4)
        elif s["solver"] == "omp":
            c = omp(dic, y, s["n_nonzero"])
        else:
            raise ValueError(f"Unknown solver {s['solver']!r}; use enet, lasso or omp")
        return c * norms

    @torch.no_grad()
    def parts(self, layer: int, z: Float[torch.Tensor, "n d"]) -> dict[str, torch.Tensor]:
        """The decomposition of each row of ``z`` (paper Eq. 2-4): ``coefficients`` [n, k] and per row the norms
        ``removed`` ||D_U c_U|| (what the edit subtracts), ``mean`` (the shared mean atom's part; 0 for a
        dictionary that is not centred), ``benign`` (the other kept concepts' part), ``explained`` ||D c|| and
        ``residual`` ||z - D c|| (the reconstruction error, kept). ``D c`` is the sum of the mean, benign and
        removed parts; their norms do not add up, since the atoms are not orthogonal."""
        c = self.coefficients(layer, z)
        D = self.tensors[f"atoms.{layer}"].to(c.dtype)
        mask = self.tensors["undesirable"].to(c.device)
        shared = torch.zeros_like(mask)
        if self.settings.get("centre", False):
            shared[0] = True
        benign = ~mask & ~shared
        explained = c @ D.T
        return {"coefficients": c, "removed": ((c * mask) @ D.T).norm(dim=-1),
                "mean": ((c * shared) @ D.T).norm(dim=-1), "benign": ((c * benign) @ D.T).norm(dim=-1),
                "explained": explained.norm(dim=-1), "residual": (z - explained).norm(dim=-1)}

    def hook_fn(self, layer: int) -> HookFn:
        positions = self.settings.get("positions", "all")

        def remove(x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1]).float()
            c = self.coefficients(layer, flat)
            mask = self.tensors["undesirable"].to(c.device)
            removed = (c * mask) @ self.tensors[f"atoms.{layer}"].T.to(c.dtype)
            return (flat - removed).reshape(x.shape).to(x.dtype)

        def pace(act: torch.Tensor, hook: Any) -> torch.Tensor:
            if positions == "all":
                return remove(act)
            where = position_mask(positions, act.shape[1], act.device)
            if not bool(where.any()):
                return act
            if bool(where.all()):  # e.g. every KV-cached decoding step of a "generated" editor
                return remove(act)
            out = act.clone()
            out[:, where] = remove(act[:, where])
            return out
        return pace


    def describe_step(self, states: dict[str, tuple[torch.Tensor, torch.Tensor]], top: int = 3) -> str:
        """The undesirable concepts removed at this token at the middle layer (coefficients in activation
        units) and the share of ``||z||`` taken away there."""
        layer = self.layers[len(self.layers) // 2]
        pair = states.get(self.hook_name(layer))
        if pair is None:
            return ""
        before, after = (t.float() for t in pair)
        c = self.coefficients(layer, before[None])[0] * self.tensors["undesirable"].to(before.device)
        n = int((c != 0).sum())
        if n == 0:
            return f"L{layer}: no undesirable concept"
        if torch.equal(before, after):
            return f"L{layer}: left alone (attention sink)"
        names = self.settings["concepts"]
        best = c.abs().topk(min(top, n)).indices.tolist()
        share = float((before - after).norm() / before.norm().clamp_min(1e-12))
        return (f"L{layer}: removed " + ", ".join(f"{names[i]} {float(c[i]):+.2f}" for i in best)
                + f" ({100 * share:.1f}% of |z|)")

    def explain(self, model: Any, context: str, answer: str, top: int = 3) -> str:
        """The undesirable concepts removed most (summed |coefficient| over the tokens PaCE edits, at its middle
        layer, attention sinks left out) and how much of the activation norm the removal takes there."""
        layer = self.layers[len(self.layers) // 2]
        d = decompose(model, self, context + answer, layer)
        n_ctx = encode(model, [context])[0].shape[1]
        n = len(d["tokens"])
        where = {"all": torch.ones(n, dtype=torch.bool), "prompt": torch.arange(n) < n_ctx,
                 "generated": torch.arange(n) >= n_ctx}[self.settings.get("positions", "all")]
        sink = self.tensors.get(f"sink_norm.{layer}")
        if sink is not None:
            where &= d["norm"].cpu() <= float(sink)
        if not bool(where.any()):
            return "edits no token of this text"
        c = d["coefficients"].cpu()[where] * d["undesirable"].cpu()
        weight = c.abs().sum(0)
        total = float(weight.sum())
        share = float((d["removed"].cpu()[where] / d["norm"].cpu()[where].clamp_min(1e-12)).mean())
        kind = {"all": "", "prompt": " prompt", "generated": " answer"}[self.settings.get("positions", "all")]
        if total <= 0:
            return f"found no undesirable concept in the {int(where.sum())}{kind} tokens (layer {layer})"
        names = d["concepts"]
        best = weight.topk(min(top, int((weight > 0).sum()))).indices.tolist()
        listed = ", ".join(f"'{names[i]}' {100 * float(weight[i]) / total:.0f}%" for i in best)
        return (f"removed {listed} of the undesirable part; {100 * share:.1f}% of the activation norm on "
                f"{int(where.sum())}{kind} tokens (layer {layer})")


@torch.no_grad()
def decompose(model: Any, editor: PaCEEditor, text: str, layer: int) -> dict[str, Any]:
    """Decompose every token of ``text`` at ``layer`` (unedited activations) for analysis and plots.

    Returns ``coefficients`` [tokens, k] (activation units), ``tokens`` (labels), ``concepts``,
    ``undesirable`` [k], and per token: ``norm`` ||z||, ``removed`` ||D_U c_U||, ``explained``
    ||D c|| and ``residual`` ||z - D c|| (the reconstruction error, kept by PaCE).
    """
    if layer not in editor.layers:
        raise ValueError(f"The editor has no atoms at layer {layer}; its layers are {editor.layers}")
    acts = collect_activations(model, [text], layers=[layer], position="all", progress=False)
    z = acts[resid_hook_name(layer)][0]
    tokens, _ = encode(model, [text])
    return {
        **editor.parts(layer, z), "concepts": editor.settings["concepts"],
        "undesirable": editor.tensors["undesirable"],
        "tokens": [model.tokenizer.decode([t]) for t in tokens[0].tolist()], "norm": z.norm(dim=-1),
    }
