"""Analysis utilities: measurements that say what an edit does and why, per layer and per token.

Each function takes fitted objects and a model and returns tensors or a small dataclass; the plots beside
them live in ``steerlens.plotting``.

- ``value_gradient``: for a value function (RE-Control), the cosine of ``grad V(s)`` with a reference
  direction and the value gain that one unit of edit norm buys, at every state. It says, before any
  generation, whether gradient ascent on V will push the state along the behaviour or somewhere else.
- ``value_gradient_map``: the same per layer and token of one text (a lens reading: each block's residual
  output RMS-normalised like the final norm does, as ``recontrol.value_lens``).
- ``reference_directions``: the unit mean difference of contrast pairs at the final state and at every
  layer's normalised residual stream: the reference for ``value_gradient``.
- ``removal_profile``: for a PaCE editor and one prompt with its response, the undesirable concepts' share of
  each activation and the residual share (outside the dictionary's span), per layer and token: is what
  PaCE should remove in the prompt, in the response, or outside its dictionary?
- ``compare_edits``: several editors on one text: edit size per layer and token, KL(steered || unsteered)
  of the next-token distribution per token, and the logit lens of each edit.
- ``principal_angles``, ``edit_subspaces``, ``subspace_overlaps``, ``geometry_table`` (per layer, every
  pair), ``mean_value_gradient`` (RE-Control's direction): do methods edit the same subspace?
- ``divergence_trace``: steered and unsteered greedy decoding in lockstep: the first token where they part,
  how close the call was there, and at every generated token the KL and what the edit did.
- ``check_hook``: any ``[(hook_name, fn)]`` pairs through generation with and without the KV cache, alone
  and batched: the pitfalls that make a hand-written hook wrong only in generation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from .activations import hook_names_for, rms_normalise
from .editing import observed_hooks, prompt_span, recorded_run
from .generation import encode, format_chat, generate_tokens
from .methods.recontrol import STATE_HOOK


@dataclass
class ValueGradient:
    """Per state: ``cosine`` of grad V with the reference direction, ``gain`` = ||grad V|| (the value gained
    per unit of edit norm when stepping along the gradient, to first order) and ``gain_reference`` =
    grad V . r (the value gained per unit of edit norm along the reference direction ``r``)."""

    cosine: torch.Tensor
    gain: torch.Tensor
    gain_reference: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Means over every state (what the benchmark tables report)."""
        return {"cosine": float(self.cosine.mean()), "gain": float(self.gain.mean()),
                "gain_reference": float(self.gain_reference.mean())}


def value_gradient(vf: Callable[[torch.Tensor], torch.Tensor], states: Float[torch.Tensor, "... d"],
                   reference: Float[torch.Tensor, " d"]) -> ValueGradient:
    """The gradient diagnostic of a value function ``vf`` at ``states`` against ``reference`` (any norm).

    ``cosine = <g, r> / (|g| |r|)`` with ``g = grad_s V(s)``. A controller that steps along ``g`` moves
    the state along ``r`` by ``cosine`` of each unit of edit norm; the rest of the edit goes elsewhere and
    costs fluency. Exact for a linear V (``g = w`` everywhere).
    """
    if states.shape[-1] != reference.shape[-1]:
        raise ValueError(f"states have d={states.shape[-1]}, reference has d={reference.shape[-1]}")
    if not torch.isfinite(reference).all() or float(reference.norm()) == 0:
        raise ValueError("The reference direction must be finite and non-zero")
    r = reference.float() / reference.float().norm()
    with torch.enable_grad():
        x = states.detach().float().requires_grad_(True)
        (g,) = torch.autograd.grad(vf(x).sum(), x)
    gain = g.norm(dim=-1)
    along = g @ r
    return ValueGradient(cosine=along / gain.clamp_min(1e-12), gain=gain, gain_reference=along)


@torch.no_grad()
def reference_directions(model: Any, positive: Sequence[str], negative: Sequence[str], batch_size: int = 16,
                         ) -> dict[str, Float[torch.Tensor, " d"]]:
    """Unit ``mean(positive) - mean(negative)`` of the token-averaged states, at the final state
    (``ln_final.hook_normalized``) and at each block's output RMS-normalised (``blocks.L.hook_resid_post``).
    The texts are read raw (no chat template)."""
    if not positive or not negative:
        raise ValueError("Need at least one positive and one negative text")
    names = [f"blocks.{la}.hook_resid_post" for la in range(model.cfg.n_layers)] + [STATE_HOOK]

    def means(texts: Sequence[str]) -> dict[str, torch.Tensor]:
        total = {n: torch.zeros(model.cfg.d_model, dtype=torch.float64) for n in names}
        for i in range(0, len(texts), batch_size):
            tokens, mask = encode(model, list(texts[i:i + batch_size]))
            _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: n in names)
            m = mask.bool().cpu()
            for n in names:
                x = cache[n].float().cpu()
                x = x if n == STATE_HOOK else rms_normalise(x)
                per_text = (x * m[..., None]).sum(1) / m.sum(1, keepdim=True)
                total[n] += per_text.double().sum(0)
        return {n: t / len(texts) for n, t in total.items()}

    pos, neg = means(positive), means(negative)
    out = {}
    for n in names:
        d = (pos[n] - neg[n]).float()
        out[n] = d / d.norm().clamp_min(1e-12)
    return out


@torch.no_grad()
def value_gradient_map(model: Any, vf: Callable[[torch.Tensor], torch.Tensor], text: str,
                       references: dict[str, torch.Tensor]) -> tuple[ValueGradient, list[str]]:
    """``value_gradient`` at every layer and token of ``text``: rows are the blocks' outputs
    (RMS-normalised, a lens reading of a V trained on the final state) then the final state itself; each
    row against its own reference (``reference_directions``). Returns ([n_layers + 1, tokens] fields,
    token labels)."""
    names = [f"blocks.{la}.hook_resid_post" for la in range(model.cfg.n_layers)] + [STATE_HOOK]
    missing = [n for n in names if n not in references]
    if missing:
        raise ValueError(f"No reference direction for {missing[:3]}...: build them with reference_directions")
    tokens, mask = encode(model, [text])
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: n in names)
    rows = []
    for n in names:
        x = cache[n][0].float().cpu()
        rows.append(value_gradient(vf, x if n == STATE_HOOK else rms_normalise(x), references[n].cpu()))
    labels = [model.tokenizer.decode([t]) for t in tokens[0].tolist()]
    stack = lambda f: torch.stack([getattr(r, f) for r in rows])  # noqa: E731
    return ValueGradient(stack("cosine"), stack("gain"), stack("gain_reference")), labels


# -- PaCE: where the removed energy sits ------------------------------------------------------------------------
@dataclass
class RemovalProfile:
    """What PaCE finds in one text, per layer and token, on unedited activations.

    ``share`` [layers, tokens]: ``||D_U c_U|| / ||z||``, the undesirable concepts' part of each activation (what
    PaCE removes where it edits); ``residual`` [layers, tokens]: ``||z - D c|| / ||z||``, the part outside the
    dictionary's span (kept by PaCE); ``prompt_len``: tokens of the context (the rest is the response);
    ``sink`` [tokens]: attention-sink positions (norm above the editor's threshold at any layer), left out
    of region means. ``mean_atom`` and ``benign`` [layers, tokens]: the shared mean atom's part and the other
    kept concepts' part, as shares of ``||z||`` (the breakdown of why an edit is small: most of an
    activation is the mean atom, kept concepts or residual; ``breakdown`` averages it per layer).
    """

    tokens: list[str]
    layers: list[int]
    share: torch.Tensor
    residual: torch.Tensor
    prompt_len: int
    sink: torch.Tensor
    mean_atom: torch.Tensor | None = None
    benign: torch.Tensor | None = None

    def breakdown(self, which: str = "all") -> dict[str, torch.Tensor]:
        """Per layer, the mean share of ``||z||`` held by each part over a region's tokens: ``mean_atom``,
        ``benign``, ``undesirable`` (what PaCE removes) and ``residual``."""
        fields = {"mean_atom": "mean_atom", "benign": "benign", "undesirable": "share", "residual": "residual"}
        return {name: self.mean(which, f) for name, f in fields.items() if getattr(self, f) is not None}

    def region(self, which: str) -> torch.Tensor:
        """Bool mask [tokens] of ``"prompt"``, ``"generated"`` or ``"all"`` positions, sinks left out."""
        n = len(self.tokens)
        pos = torch.arange(n)
        masks = {"prompt": pos < self.prompt_len, "generated": pos >= self.prompt_len,
                 "all": torch.ones(n, dtype=torch.bool)}
        if which not in masks:
            raise ValueError(f"region must be one of {sorted(masks)}, not {which!r}")
        return masks[which] & ~self.sink

    def mean(self, which: str, field: str = "share") -> torch.Tensor:
        """Per layer, the mean of ``share`` (or ``residual``, ``mean_atom``, ``benign``) over a region's tokens
        (NaN if it has none)."""
        values = getattr(self, field)
        if values is None:
            raise ValueError(f"This profile has no {field!r} (built without it)")
        where = self.region(which)
        if not bool(where.any()):
            return torch.full((len(self.layers),), float("nan"))
        return values[:, where].mean(1)


@torch.no_grad()
def removal_profile(model: Any, editor: Any, context: str, response: str = "") -> RemovalProfile:
    """Decompose every token of ``context + response`` at each of a PaCE editor's layers (paper Eq. 2-3, on
    the unedited forward pass) and measure the undesirable part and the residual, per layer and token.

    It separates three reasons an edit can fail to change a continuation: the undesirable concepts are in
    the prompt (then prompt-position editing removes them), they appear only in the response (positions a
    ``positions="prompt"`` editor leaves alone), or the text lies outside the dictionary's span (a large
    ``residual``, which PaCE keeps whatever the partition)."""
    from .editing import resid_hook_name

    if getattr(editor, "method", None) != "pace":
        raise ValueError(f"removal_profile needs a PaCE editor, not {type(editor).__name__}")
    editor.model.check(model, "PaCE editor")
    # context and response tokenised apart and joined, as generation saw them (no merge across the boundary)
    ctx = encode(model, [context])[0][0] if context else torch.zeros(0, dtype=torch.long)
    resp = encode(model, [response])[0][0] if response else torch.zeros(0, dtype=torch.long)
    tokens = torch.cat([ctx, resp])[None]
    if tokens.shape[1] == 0:
        raise ValueError("removal_profile needs a non-empty text")
    n_ctx = int(ctx.shape[0])
    names = {resid_hook_name(layer) for layer in editor.layers}
    _, cache = model.run_with_cache(tokens.to(next(model.parameters()).device), names_filter=lambda n: n in names)
    share, residual, mean_atom, benign = [], [], [], []
    sink = torch.zeros(tokens.shape[1], dtype=torch.bool)
    for layer in editor.layers:
        z = cache[resid_hook_name(layer)][0].float().cpu()
        parts = editor.parts(layer, z)
        norm = z.norm(dim=-1).clamp_min(1e-12)
        share.append(parts["removed"] / norm)
        residual.append(parts["residual"] / norm)
        mean_atom.append(parts["mean"] / norm)
        benign.append(parts["benign"] / norm)
        threshold = editor.tensors.get(f"sink_norm.{layer}")
        if threshold is not None:
            sink |= norm > float(threshold)
    return RemovalProfile([model.tokenizer.decode([t]) for t in tokens[0].tolist()], list(editor.layers),
                          torch.stack(share), torch.stack(residual), n_ctx, sink, torch.stack(mean_atom),
                          torch.stack(benign))


# -- pitfalls: does a hand-written hook behave the same cached and uncached, batched and alone? ----------------
@dataclass
class HookCheck:
    """The result of ``check_hook``. ``ok`` is False when the hooked model generated differently with and
    without the KV cache, or batched and alone, while the unhooked model did not; ``problems`` says what
    differed (prompt, first differing new token); ``notes`` lists differences the unhooked model shows too
    (numerical noise of the model itself, not the hook's fault)."""

    ok: bool
    problems: list[str]
    notes: list[str]

    def __str__(self) -> str:
        head = "hook check: ok" if self.ok else "hook check: FAILED"
        return "\n".join([head, *(f"  - {p}" for p in self.problems), *(f"  (note) {n}" for n in self.notes)])


DEFAULT_CHECK_PROMPTS = ("The weather today is", "My favourite food is a bowl of hot", "Tell me why")


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first index where two token streams differ (one ending early counts: the shorter one's length), or
    None when they are equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.no_grad()
def check_hook(model: Any, fwd_hooks: Sequence[tuple[str | Callable, Callable]],
               prompts: Sequence[str] = DEFAULT_CHECK_PROMPTS, max_new_tokens: int = 8) -> HookCheck:
    """Run the ``[(hook_name, fn)]`` pairs that ``model.run_with_hooks`` takes through greedy generation four
    ways and compare the new tokens: with and without the KV cache (a hook that indexes positions, or keeps
    state across calls, sees one new token per call with the cache and the whole sequence without it), and
    every prompt alone against all of them batched and left-padded (a hook that mixes rows or assumes no
    padding). The same comparisons without the hooks tell the model's own noise from the hook's fault.

    Example:
        >>> check_hook(model, [("blocks.6.hook_resid_post", my_hook)]).ok
    """
    from .generation import generate_tokens

    if len(prompts) < 2:
        raise ValueError("check_hook needs at least two prompts (of different lengths, to exercise padding)")
    if max_new_tokens < 2:
        raise ValueError("max_new_tokens must be at least 2, so that cached decoding steps run")
    named = [name for name, _ in fwd_hooks if isinstance(name, str)]
    if named:
        hook_names_for(model, hook_names=named)  # an unknown name is refused, with similar ones
    no_stop: list[int] = []

    def run(hooks: Sequence) -> dict[str, Any]:
        with model.hooks(fwd_hooks=list(hooks)):
            alone = [encode(model, [p]) for p in prompts]
            cached = [generate_tokens(model, t, m, max_new_tokens, stop_token_ids=no_stop)[0] for t, m in alone]
            uncached = [generate_tokens(model, t, m, max_new_tokens, use_cache=False, stop_token_ids=no_stop)[0]
                        for t, m in alone]
            t, m = encode(model, list(prompts))
            batched = generate_tokens(model, t, m, max_new_tokens, stop_token_ids=no_stop)
        return {"cached": cached, "uncached": uncached, "batched": batched}

    hooked, plain = run(fwd_hooks), run([])
    problems, notes = [], []
    for label, other in (("without the KV cache", "uncached"), ("batched with the other prompts", "batched")):
        for i, p in enumerate(prompts):
            where = first_divergence(hooked["cached"][i], hooked[other][i])
            if where is None:
                continue
            text = f"{p!r}: generation alone with the KV cache and {label} differ from new token {where}"
            if first_divergence(plain["cached"][i], plain[other][i]) is None:
                problems.append(text)
            else:
                notes.append(text + " (the unhooked model differs too)")
    return HookCheck(not problems, problems, notes)


# -- one prompt, every edit ------------------------------------------------------------------------------------
def kl_divergence(p_logits: Float[torch.Tensor, "... v"], q_logits: Float[torch.Tensor, "... v"]
                  ) -> Float[torch.Tensor, "..."]:
    """KL(p || q) in nats between the softmax distributions of two logit tensors, over the last axis."""
    logp, logq = p_logits.float().log_softmax(-1), q_logits.float().log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def _row_of(hook_name: str, n_layers: int) -> int:
    """The comparison row of a hook point: its block index, or ``n_layers`` (the final state) for the rest."""
    parts = hook_name.split(".")
    return int(parts[1]) if parts[0] == "blocks" and parts[1].isdigit() else n_layers


@dataclass
class EditComparison:
    """Several editors on one text, teacher-forced (``compare_edits``).

    ``sizes`` [editors, n_layers + 1, tokens]: ``||edit(z) - z|| / ||z||`` at each block's hook (rows
    0..n_layers-1) and at the final state (last row; RE-Control edits there), 0 where an editor does not
    edit; ``kl`` [editors, tokens]: KL(steered || unsteered) of the next-token distribution at each position;
    ``lens``: per editor, ``{row: [top tokens of the mean edit vector read through the unembedding]}``.
    """

    names: list[str]
    tokens: list[str]
    sizes: torch.Tensor
    kl: torch.Tensor
    lens: dict[str, dict[int, list[str]]]


@torch.no_grad()
def compare_edits(model: Any, editors: Mapping[str, Any], text: str, top: int = 5) -> EditComparison:
    """Run ``text`` once unsteered and once per editor with its hooks, each hook wrapped to record what it
    changed (the edits compound layer to layer as in generation), and the next-token distributions.

    The logit lens of an edit: the mean over tokens (attention sinks left out) of ``edit(z) - z`` at each
    edited hook, multiplied by the unembedding ``W_U`` (no final norm: a direction, not a state), top tokens.
    """
    if not editors:
        raise ValueError("compare_edits needs at least one editor, e.g. {'actadd': editor}")
    tokens, mask = encode(model, [text])
    n_layers = int(model.cfg.n_layers)
    base = model(tokens, attention_mask=mask)[0]
    labels = [model.tokenizer.decode([t]) for t in tokens[0].tolist()]
    sizes = torch.zeros(len(editors), n_layers + 1, tokens.shape[1])
    kl = torch.zeros(len(editors), tokens.shape[1])
    lens: dict[str, dict[int, list[str]]] = {}
    W_U = model.W_U.float().cpu()
    for e, (name, editor) in enumerate(editors.items()):
        editor.model.check(model, f"editor {name!r}")
        steered, edits = recorded_run(model, editor, tokens, mask)
        kl[e] = kl_divergence(steered[0], base).cpu()
        lens[name] = {}
        for hook_name, (delta, norm) in edits.items():
            row = _row_of(hook_name, n_layers)
            size = delta.norm(dim=-1)
            sizes[e, row] = size / norm.clamp_min(1e-12)
            if bool((size > 0).any()):  # sinks keep their value: the mean is over the tokens the edit moved
                logits = delta[size > 0].mean(0) @ W_U
                lens[name][row] = [model.tokenizer.decode([t]) for t in logits.topk(top).indices.tolist()]
    return EditComparison(list(editors), labels, sizes, kl, lens)


# -- geometry across methods ------------------------------------------------------------------------------------
def principal_angles(a: Float[torch.Tensor, "d p"], b: Float[torch.Tensor, "d q"]) -> Float[torch.Tensor, " r"]:
    """Principal angles in degrees (ascending, ``r = min(rank a, rank b)``) between the column spans of ``a``
    and ``b``: ``arccos`` of the singular values of ``Qa^T Qb`` for orthonormal bases ``Qa``, ``Qb``
    (Björck and Golub 1973; scipy.linalg.subspace_angles returns the same, descending, in radians)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"Need two [d, k] matrices with the same d, got {tuple(a.shape)} and {tuple(b.shape)}")
    from .methods.baselines import orthonormal_basis

    # float64 throughout: arccos is ill-conditioned near 0 degrees
    qa, qb = (orthonormal_basis(m.T, tol=1e-10, dtype=torch.float64) for m in (a, b))
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        raise ValueError("A subspace is empty (all-zero columns)")
    s = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(s)).float()


def edit_subspaces(editor: Any, layer: int) -> dict[str, Float[torch.Tensor, "d k"]]:
    """The subspaces an editor works in at ``layer``, named ``"<method>: <part>"``: ActAdd's direction,
    OrthoProj's removed direction, SEA's kept (positive) and removed (negative) bases, the span of PaCE's
    undesirable atoms. Pass the results of several editors to ``subspace_overlaps``."""
    if layer not in editor.layers:
        raise ValueError(f"The {editor.method} editor has no layer {layer}; its layers are {editor.layers}")
    t, m = editor.tensors, editor.method
    if m == "actadd":
        return {"actadd: direction": t[f"vector.{layer}"][:, None]}
    if m == "orthoproj":
        return {"orthoproj: removed": t[f"basis.{layer}"]}
    if m == "sea":
        return {"sea: kept (+)": t[f"u_pos.{layer}"], "sea: removed (-)": t[f"u_neg.{layer}"]}
    if m == "pace":
        return {"pace: undesirable atoms": t[f"atoms.{layer}"][:, t["undesirable"]]}
    raise ValueError(f"No subspace is defined for the {m} editor; pass its directions to subspace_overlaps yourself")


def subspace_overlaps(subspaces: Mapping[str, torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    """The smallest principal angle (degrees) between every pair of named subspaces: 0 means they share a
    direction (e.g. SEA's kept and removed bases at a layer where its edit cancels), 90 that they are
    orthogonal. Returns (names, [n, n] matrix)."""
    names = list(subspaces)
    out = torch.zeros(len(names), len(names))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if j > i:
                out[i, j] = out[j, i] = principal_angles(subspaces[a], subspaces[b])[0]
    return names, out


@dataclass
class GeometryTable:
    """``geometry_table``: ``angles[i, j]`` is the smallest principal angle (degrees) of pair ``pairs[j]`` at
    ``layers[i]``, NaN where one of the two subspaces is not edited at that layer."""

    layers: list[int]
    pairs: list[str]
    angles: torch.Tensor


def geometry_table(editors: Sequence[Any], layers: Sequence[int] | None = None,
                   extra: Mapping[int, Mapping[str, torch.Tensor]] | None = None) -> GeometryTable:
    """Per layer, the smallest principal angle between every pair of subspaces the editors work in there
    (``edit_subspaces``), plus ``extra`` ``{layer: {name: [d, k] directions}}`` (e.g. RE-Control's
    ``mean_value_gradient`` at the last layer). Layers: every layer where at least two subspaces meet."""
    extra = extra or {}
    per_layer: dict[int, dict[str, torch.Tensor]] = {}
    for ed in editors:
        for layer in ed.layers:
            try:
                per_layer.setdefault(layer, {}).update(edit_subspaces(ed, layer))
            except ValueError:  # an editor with no subspace (RE-Control): pass its directions in ``extra``
                continue
    for layer, spaces in extra.items():
        per_layer.setdefault(layer, {}).update(spaces)
    chosen = sorted(la for la, sp in per_layer.items() if len(sp) >= 2) if layers is None else list(layers)
    pairs: list[str] = []
    for la in chosen:
        names = list(per_layer.get(la, {}))
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if f"{a} vs {b}" not in pairs:
                    pairs.append(f"{a} vs {b}")
    angles = torch.full((len(chosen), len(pairs)), float("nan"))
    for i, la in enumerate(chosen):
        names, table = subspace_overlaps(per_layer.get(la, {}))
        for x, a in enumerate(names):
            for y, b in enumerate(names):
                if y > x:
                    angles[i, pairs.index(f"{a} vs {b}")] = table[x, y]
    return GeometryTable(chosen, pairs, angles)


def mean_value_gradient(model: Any, controller: Any, texts: Sequence[str]) -> Float[torch.Tensor, "d 1"]:
    """The unit mean of grad V over the final states of ``texts`` (every token but the first, the sink), in
    the space RE-Control's hook edits (``ln_final.hook_normalized``): the direction its ascent pushes along
    when V is near-linear. Returned as a [d, 1] subspace for ``geometry_table``'s ``extra``."""
    if not texts:
        raise ValueError("mean_value_gradient needs at least one text")
    vf = controller.value_function()
    total = torch.zeros(int(model.cfg.d_model))
    for text in texts:
        tokens, mask = encode(model, [text])
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: n == STATE_HOOK)
        s = cache[STATE_HOOK][0, 1:].float().detach().requires_grad_(True)
        vf(controller.state_of(s)).sum().backward()
        total += s.grad.sum(0).cpu()
    if float(total.norm()) == 0.0:
        raise ValueError("grad V is zero on these texts")
    return (total / total.norm())[:, None]


# -- divergence trace: where does the steered text part from the unsteered one, and why? ------------------------
@dataclass
class DivergenceTrace:
    """The result of ``divergence_trace``. Per steered token ``i`` (``steered[i]``): ``kl[i]`` =
    KL(steered || unsteered) of the next-token distribution at the position that produced it, ``sizes[:, i]``
    = ``||edit(z) - z|| / ||z||`` there at each hook in ``hooks``, ``notes[i]`` = the editor's own words
    (``Editor.describe_step``). ``first``: the index of the first token where the greedy steered and
    unsteered continuations differ (None: never). ``gap_unsteered``: at that step, the unsteered logit of its
    own token minus that of the steered token (>= 0: how close the call was), ``gap_steered`` the same from
    the steered side. Shown as coloured tokens in a notebook (``_repr_html_``)."""

    prompt: str
    unsteered: list[str]
    steered: list[str]
    first: int | None
    gap_unsteered: float | None
    gap_steered: float | None
    kl: torch.Tensor
    sizes: torch.Tensor
    hooks: list[str]
    notes: list[str]

    def _repr_html_(self) -> str:
        from .plotting import divergence_html

        return divergence_html(self)


@torch.no_grad()
def divergence_trace(model: Any, editor: Any, prompt: str, max_new_tokens: int = 24, chat: bool = True,
                     strength: float = 1.0) -> DivergenceTrace:
    """Decode ``prompt`` greedily with and without ``editor`` in lockstep. The steered run does one forward
    pass per step with the hooks, each wrapped to record the state it got and what it returned at the last
    position; one unsteered pass over the steered text then gives the unsteered next-token distribution on
    the same prefixes (the model is causal). That gives the KL between the two at every steered token and,
    where the continuations first differ, the logit gap of the choice. A plain unsteered greedy run gives the
    unsteered continuation to compare with.

    The steered steps are uncached (each runs the whole prefix, so editors that look at positions see what
    they see without a cache): meant for one prompt and a few dozen tokens (5-50 s on 2 CPU cores).
    """
    editor.model.check(model, f"{editor.method} editor")
    text = format_chat(model.tokenizer, prompt) if chat else prompt
    tokens, mask = encode(model, [text])
    eos = getattr(model.tokenizer, "eos_token_id", None)
    stop = [] if eos is None else [eos]
    plain_ids = generate_tokens(model, tokens, mask, max_new_tokens, stop_token_ids=stop)[0]

    states: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(name: str, act: torch.Tensor, out: torch.Tensor) -> None:
        states[name] = (act[0, -1].detach().clone(), out[0, -1].detach().clone())

    hooks = observed_hooks(editor, record, strength)
    names = list(dict.fromkeys(name for name, _ in hooks))
    ids = tokens.to(next(model.parameters()).device)
    steered_ids: list[int] = []
    sizes, notes = [], []
    gaps: tuple[float, float] | tuple[None, None] = (None, None)
    steered_logits = []
    with prompt_span(tokens.shape[1]):
        for _ in range(max_new_tokens):
            states.clear()
            logits = model.run_with_hooks(ids, fwd_hooks=hooks)[0, -1].float()
            steered_logits.append(logits)
            nxt = int(logits.argmax())
            if nxt in stop:
                break
            sizes.append([float((states[n][1].float() - states[n][0].float()).norm()
                                / states[n][0].float().norm().clamp_min(1e-12)) if n in states else 0.0
                          for n in names])
            notes.append(editor.describe_step(dict(states)))
            steered_ids.append(nxt)
            ids = torch.cat([ids, ids.new_tensor([[nxt]])], dim=1)
    # the unsteered distributions along the steered path: one pass (causal, so the same as step by step)
    base_all = model(ids)[0, tokens.shape[1] - 1:].float()
    kls = [float(kl_divergence(steered_logits[i], base_all[i])) for i in range(len(steered_ids))]
    first = first_divergence(plain_ids, steered_ids)
    if first is not None:
        chosen = steered_ids[first] if first < len(steered_ids) else eos
        other = plain_ids[first] if first < len(plain_ids) else eos
        if chosen is not None and other is not None:
            base, logits = base_all[first], steered_logits[first]
            gaps = (float(base[other] - base[chosen]), float(logits[chosen] - logits[other]))
    decode = model.tokenizer.decode
    return DivergenceTrace(prompt, [decode([t]) for t in plain_ids], [decode([t]) for t in steered_ids],
                           first, gaps[0], gaps[1], torch.tensor(kls),
                           torch.tensor(sizes).reshape(len(kls), len(names)).T, names, notes)
