"""SEA: Spectral Editing of Activations (Qiu et al., NeurIPS 2024, arXiv 2405.09719).

From neutral activations ``H`` (the model's own answers), positive ``H+`` and negative ``H-``
demonstrations (rows are samples, last token of prompt + answer, residual stream after each layer):

- cross-covariances, float64 (paper Eq. 1): ``O+ = H^T H+ / n``, ``O- = H^T H- / n``  (d x d);
- SVD ``O = U S V^T``; ``k`` = smallest k with ``sum_{j<=k} s_j^2 / sum s^2 >= K`` (energy threshold);
- positive projection keeps the top ``k+`` left singular vectors: ``P+ = U+[:, :k+] U+[:, :k+]^T``;
  negative projection drops the top ``k-``: ``P- = I - U-[:, :k-] U-[:, :k-]^T`` (paper Eq. 2-3);
- edit (paper Eq. 4): ``z' = (P+ z + P- z) * ||z|| / ||P+ z + P- z||``, on every token of the
  chosen layers, the norm rescaled per token vector (so cached and uncached generation agree).

Only the d x k bases ``U+[:, :k+]`` and ``U-[:, :k-]`` are stored, never d x d matrices.
The edit is applied to the same tensor the projections were learned on (``blocks.L.hook_resid_post``).

Phi-SEA (paper Sec. 3.3): apply an elementwise feature map ``phi`` to ``H, H+, H-`` (and to ``z`` at
inference), do the same spectral step in phi-space, then map back with ``phi``'s (pseudo-)inverse.

Centred SEA (``centre=True``, steerlens's variant, not the paper's): the cross-covariances are those of centred
activations, ``(H - mean H)^T (H+ - mean H+) / n``, and the edit acts on ``z - m`` (``m`` = mean of ``H``):
``z' = m + Eq. 4(z - m)``. On a small model the uncentred Eq. 1 is dominated by the mean activation that
neutral, positive and negative states share: its first direction holds 99%+ of the energy at every layer, so
the kept and the removed subspaces coincide and Eq. 4 gives back ``z`` (``cancelled_layers``). Centring takes
that shared component out of the statistics and out of the edit (``spectrum_owners`` measures it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float

from ..activations import collect_activations
from ..demonstrations import (  # noqa: F401  (re-exported: they were defined here)
    Demonstrations,
    facts_demonstrations,
    pair_demonstrations,
    truthfulqa_demonstrations,
)
from ..editing import (
    Editor,
    HookFn,
    ModelSpec,
    TensorSpec,
    check_finite,
    check_layers,
    checked_settings,
    register,
    resid_hook_name,
    sink_threshold,
)
from ..settings import Setting

FeatureMap = Literal["linear", "tanh", "elu", "sqexp"]
TRUTHFULQA_NEUTRAL_TOKENS = 32  # neutral answer length used when K and layers were chosen on TruthfulQA
NEUTRAL_TOKENS = {"truthfulqa": TRUTHFULQA_NEUTRAL_TOKENS, "bias": 16}  # the bias answers are a few words
_EPS = 1e-6


# -- maths on tensors (no model) ------------------------------------------------------------------------
def cross_covariance(
    h: Float[torch.Tensor, "n d"], h_other: Float[torch.Tensor, "n d"]
) -> Float[torch.Tensor, "d d"]:
    """``H^T H_other / n`` in float64 (paper Eq. 1, samples as rows)."""
    if h.shape != h_other.shape:
        raise ValueError(f"Neutral and demonstration activations differ in shape: {tuple(h.shape)} vs "
                         f"{tuple(h_other.shape)}; each neutral row pairs with one demonstration row")
    if h.shape[0] == 0:
        raise ValueError("No demonstrations")
    return h.double().T @ h_other.double() / h.shape[0]


def energy_rank(s: Float[torch.Tensor, " r"], energy: float) -> int:
    """Smallest k with ``sum_{j<=k} s_j^2 / sum_j s_j^2 >= energy`` (s sorted descending)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"Energy threshold must be in (0, 1], got {energy}")
    e = s.double() ** 2
    cum = e.cumsum(0) / e.sum()
    return int(min(int((cum < energy - 1e-12).sum()) + 1, len(s)))


def centred(x: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n d"]:
    """``x`` minus its mean row (float64)."""
    x = x.double()
    return x - x.mean(0)


def spectral_bases(
    h: Float[torch.Tensor, "n d"],
    h_pos: Float[torch.Tensor, "n d"],
    h_neg: Float[torch.Tensor, "n d"],
    k_pos: float = 0.99,
    k_neg: float | None = 0.99,
    centre: bool = False,
) -> tuple[Float[torch.Tensor, "d kp"], Float[torch.Tensor, "d kn"], dict[str, torch.Tensor]]:
    """The kept positive basis ``U+[:, :k+]`` and the removed negative basis ``U-[:, :k-]``.

    ``k_neg=None`` removes nothing. ``centre``: cross-covariances of centred activations (steerlens's variant).
    Also returns the singular values (for the spectra plots).
    """
    if centre:
        h, h_pos, h_neg = centred(h), centred(h_pos), centred(h_neg)
    u_p, s_p, _ = torch.linalg.svd(cross_covariance(h, h_pos))
    u_n, s_n, _ = torch.linalg.svd(cross_covariance(h, h_neg))
    kp = energy_rank(s_p, k_pos)
    kn = 0 if k_neg is None else energy_rank(s_n, k_neg)
    return u_p[:, :kp].float(), u_n[:, :kn].float(), {"s_pos": s_p.float(), "s_neg": s_n.float()}


def spectral_edit(
    z: Float[torch.Tensor, "... d"], u_pos: Float[torch.Tensor, "d kp"], u_neg: Float[torch.Tensor, "d kn"]
) -> Float[torch.Tensor, "... d"]:
    """Paper Eq. 4: ``(P+ z + P- z)`` rescaled to ``||z||``, per token vector."""
    z_pos = (z @ u_pos) @ u_pos.T
    z_neg = z - (z @ u_neg) @ u_neg.T
    merged = z_pos + z_neg
    scale = z.norm(dim=-1, keepdim=True) / merged.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return merged * scale


def spectrum_owners(
    h: Float[torch.Tensor, "n d"], h_other: Float[torch.Tensor, "n d"],
    references: dict[str, Float[torch.Tensor, " d"]] | None = None,
) -> dict[str, float]:
    """What owns the first direction of ``O = H^T H_other / n`` (Eq. 1): the share of the energy it holds,
    uncentred and centred, and the absolute cosine of its left singular vector with the mean of ``H`` and with
    each of ``references`` (e.g. the attention sink's state, a massive dimension's unit vector)."""
    u, s, _ = torch.linalg.svd(cross_covariance(h, h_other))
    _, s_c, _ = torch.linalg.svd(cross_covariance(centred(h), centred(h_other)))
    energy, energy_c = s.double() ** 2, s_c.double() ** 2
    first = u[:, 0]

    def cos(v: torch.Tensor) -> float:
        v = v.double()
        return float((first @ v).abs() / v.norm().clamp_min(1e-12))

    out = {"first_share": float(energy[0] / energy.sum()), "first_share_centred": float(energy_c[0] / energy_c.sum()),
           "cos_mean": cos(h.double().mean(0))}
    out.update({f"cos_{k}": cos(v) for k, v in (references or {}).items()})
    return out


def phi(x: torch.Tensor, kind: FeatureMap, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Elementwise feature map (paper Sec. 3.3), on ``x / scale`` so it does not saturate."""
    y = x / scale
    if kind == "linear":
        return y
    if kind == "tanh":
        return torch.tanh(y)
    if kind == "elu":
        return torch.nn.functional.elu(y)
    if kind == "sqexp":
        return torch.exp(-0.5 * y * y)
    raise ValueError(f"Unknown feature map {kind!r}; use linear, tanh, elu or sqexp")


def phi_inverse(y: torch.Tensor, kind: FeatureMap, scale: torch.Tensor | float = 1.0,
                sign_of: torch.Tensor | None = None) -> torch.Tensor:
    """(Pseudo-)inverse of ``phi``: exact for tanh and ELU inside their ranges (values are clipped into
    them). The squared exponential loses the sign, which is taken from ``sign_of`` (the unedited input).
    """
    if kind == "linear":
        x = y
    elif kind == "tanh":
        x = torch.atanh(y.clamp(-1 + 1e-6, 1 - 1e-6))
    elif kind == "elu":
        x = torch.where(y > 0, y, torch.log1p(y.clamp_min(-1 + 1e-6)))
    elif kind == "sqexp":
        mag = torch.sqrt(-2.0 * torch.log(y.clamp(1e-30, 1.0)))
        sign = torch.ones_like(y) if sign_of is None else torch.where(sign_of < 0, -1.0, 1.0).to(y.dtype)
        x = sign * mag
    else:
        raise ValueError(f"Unknown feature map {kind!r}; use linear, tanh, elu or sqexp")
    return x * scale


def demonstration_activations(model: Any, demos: Demonstrations, layers: Sequence[int], batch_size: int = 16,
                              progress: bool = True, cache: bool = True) -> dict[str, dict[int, torch.Tensor]]:
    """``{"neutral"|"positive"|"negative": {layer: [n, d]}}`` at the last token of prompt + answer.

    Repeated texts (e.g. one neutral answer shared by several demonstrations of a question) run once.
    ``cache``: the activations are kept under ``cache_dir()/activations``, keyed by the model's weights, the
    texts and the layers, so a refit with other K, feature map or centring is an SVD, not a forward pass.
    """
    texts = {which: demos.texts(model, which) for which in ("neutral", "positive", "negative")}
    unique = list(dict.fromkeys(t for which in texts.values() for t in which))

    def make() -> dict[str, torch.Tensor]:
        acts = collect_activations(model, unique, layers=layers, position="last", batch_size=batch_size,
                                   progress=progress)
        return {str(layer): acts[resid_hook_name(layer)] for layer in layers}

    if cache:
        from ..editing import weights_fingerprint
        from ..files import content_key, memo
        from ..models import cache_dir

        key = content_key(str(getattr(model.cfg, "model_name", "")), weights_fingerprint(model), unique,
                          list(layers))

        def load(path: Any) -> dict[str, torch.Tensor]:
            value = torch.load(path, weights_only=True)
            if sorted(value) != sorted(str(la) for la in layers) or any(
                    v.shape != (len(unique), model.cfg.d_model) for v in value.values()):
                raise ValueError("cached activations of another shape")
            return value

        acts = memo(cache_dir() / "activations" / f"{key}.pt", make, save=lambda v, p: torch.save(v, p), load=load)
    else:
        acts = make()
    where = {t: i for i, t in enumerate(unique)}
    out = {}
    for which, ts in texts.items():
        idx = torch.tensor([where[t] for t in ts])
        out[which] = {layer: acts[str(layer)][idx] for layer in layers}
    return out


# -- the editor -----------------------------------------------------------------------------------------
@register
class SpectralEditor(Editor):
    """SEA / Phi-SEA editor. Settings: ``k_pos``, ``k_neg`` (energy thresholds), ``feature_map``.

    Tensors per layer: ``u_pos.{L}`` [d, k+], ``u_neg.{L}`` [d, k-], ``s_pos.{L}``, ``s_neg.{L}``
    (singular values, for plots), ``phi_scale.{L}`` [d] and ``sink_norm.{L}``.
    """

    method = "sea"
    # 1: contrast pairs that share no first word no longer lend the positive's first word to the negative
    recipe_revision = 1
    settings_spec = (
        Setting("layers", "layers", list(range(15, 30)), "the layers whose residual stream is edited", saved=False),
        Setting("k", "float", 0.99, "the energy both subspaces keep (K+ = K-, paper Sec. 3.2)", low=0.0,
                high=1.0, open_low=True, saved=False),
        Setting("k_pos", "float", 0.99, "energy of the kept (positive) subspace", low=0.0, high=1.0, open_low=True,
                recipe=False),
        Setting("k_neg", "float", 0.99, "energy of the removed (negative) subspace", low=0.0, high=1.0,
                open_low=True, optional=True, recipe=False),
        Setting("feature_map", "str", "linear", "Phi-SEA's feature map", choices=("linear", "tanh", "elu", "sqexp")),
        Setting("centre", "bool", False, "centre the activations before Eq. 1 and edit around the neutral mean "
                "(steerlens's variant; false: the paper's uncentred Eq. 1)"),
    )
    tensor_spec = (TensorSpec("u_pos.{L}", ("d_model", "*")), TensorSpec("u_neg.{L}", ("d_model", "*")),
                   TensorSpec("s_pos.{L}", ("*",)), TensorSpec("s_neg.{L}", ("*",)),
                   TensorSpec("phi_scale.{L}", ("d_model",)), TensorSpec("sink_norm.{L}", (), optional=True),
                   TensorSpec("mean.{L}", ("d_model",), optional=True))
    # The paper's variant (Eq. 1-4, uncentred) for both tasks. The centred variant scored higher on held-out
    # multiple choice (benchmarks/sea_redesign.py, benchmarks/sea_bias.py) but breaks generation (next-token KL
    # of 5-12 nats on the unsteered text, replies such as "no no no"; benchmarks/sea_fluency.py), so
    # it stays a setting (centre=True) and a lesson (notebook 02, section 8), not a default.
    task_defaults = {"truthfulqa": {"layers": list(range(10, 30)), "k": 0.998},
                     "bias": {"layers": list(range(10, 30)), "k": 0.998}}
    demo_notes = {"truthfulness": (
        "SEA projects every activation at layers 10-29 onto directions shared with true answers and off those "
        "shared with false ones. Besides the answer, each line says whether the model scores the true answer "
        "above every false one (log-probability margin), unsteered and steered: SEA's gain on held-out "
        "TruthfulQA questions is a few points of accuracy, so most single questions move little.")}

    @classmethod
    def for_task(cls, model: Any, task: Any, settings: dict[str, Any]) -> SpectralEditor:
        """The task's contrast pairs as demonstrations; for TruthfulQA with the model's own neutral answers of
        ``NEUTRAL_TOKENS[task]`` tokens (as in ``benchmarks/sea_redesign.py`` and ``benchmarks/sea_bias.py``,
        where the variants were compared; ``benchmarks/sea_fluency.py`` for what they do to generated text)."""
        demos = task.contrast_pairs()
        if task.name in NEUTRAL_TOKENS:
            demos = demos.with_neutral(model, max_new_tokens=NEUTRAL_TOKENS[task.name], batch_size=32,
                                       progress=task.progress)
        return cls.fit(model, demos, layers=settings["layers"], k_pos=settings["k"], k_neg=settings["k"],
                       feature_map=settings["feature_map"], centre=settings["centre"], progress=task.progress)

    @classmethod
    @checked_settings
    def fit_activations(cls, spec: ModelSpec, acts: dict[str, dict[int, torch.Tensor]], layers: Sequence[int],
                        k_pos: float = 0.99, k_neg: float | None = 0.99,
                        feature_map: FeatureMap = "linear", centre: bool = False) -> SpectralEditor:
        """Fit from precomputed demonstration activations (see ``demonstration_activations``)."""
        tensors: dict[str, torch.Tensor] = {}
        for layer in layers:
            h, hp, hn = (acts[w][layer].float() for w in ("neutral", "positive", "negative"))
            for x, what in ((h, "neutral"), (hp, "positive"), (hn, "negative")):
                check_finite(x, f"{what} activations at layer {layer}")
            scale = torch.cat([h, hp, hn]).std(dim=0).clamp_min(_EPS) if feature_map != "linear" \
                else torch.ones(h.shape[1])
            fh, fp, fn = (phi(x, feature_map, scale) for x in (h, hp, hn))
            u_pos, u_neg, spectra = spectral_bases(fh, fp, fn, k_pos, k_neg, centre=centre)
            if centre:
                tensors[f"mean.{layer}"] = fh.double().mean(0).float()
            tensors.update({f"u_pos.{layer}": u_pos, f"u_neg.{layer}": u_neg, f"phi_scale.{layer}": scale,
                            f"s_pos.{layer}": spectra["s_pos"], f"s_neg.{layer}": spectra["s_neg"],
                            f"sink_norm.{layer}": sink_threshold(torch.cat([h, hp, hn]).norm(dim=-1))})
        settings = {"k_pos": k_pos, "k_neg": k_neg, "feature_map": feature_map, "centre": centre}
        return cls(model=spec, layers=list(layers), settings=settings, tensors=tensors)

    @classmethod
    @checked_settings
    def fit(cls, model: Any, demos: Demonstrations, layers: Sequence[int] | None = None, k_pos: float = 0.998,
            k_neg: float | None = 0.998, feature_map: FeatureMap = "linear", centre: bool = False,
            progress: bool = True) -> SpectralEditor:
        """Generate neutral answers if missing, collect activations, and fit (paper Alg. 1).

        Defaults: the last two thirds of the layers and K = 99.8% for both subspaces, the best mean
        2-fold cross-validated setting on TruthfulQA's development split for SmolLM2-135M-Instruct
        (``benchmarks/sea_truthfulqa.py``); the paper's best was K = 99.8% on 21 of 32 layers.
        """
        n = model.cfg.n_layers
        layers = check_layers(list(range(n // 3, n) if layers is None else layers), n)
        demos = demos.with_neutral(model, progress=progress)
        acts = demonstration_activations(model, demos, layers, progress=progress)
        return cls.fit_activations(ModelSpec.of(model), acts, layers, k_pos, k_neg, feature_map, centre)

    def hook_fn(self, layer: int) -> HookFn:
        u_pos, u_neg = self.tensors[f"u_pos.{layer}"], self.tensors[f"u_neg.{layer}"]
        kind = self.settings["feature_map"]
        scale = self.tensors[f"phi_scale.{layer}"]
        mean = self.tensors.get(f"mean.{layer}") if self.settings.get("centre") else None

        def edit(f: torch.Tensor) -> torch.Tensor:
            if mean is None:
                return spectral_edit(f, u_pos.to(f.dtype), u_neg.to(f.dtype))
            m = mean.to(f.dtype)
            return m + spectral_edit(f - m, u_pos.to(f.dtype), u_neg.to(f.dtype))

        if kind == "linear":
            def sea(act: torch.Tensor, hook: Any) -> torch.Tensor:
                return edit(act)
            return sea

        def phi_sea(act: torch.Tensor, hook: Any) -> torch.Tensor:
            edited = edit(phi(act, kind, scale.to(act.dtype)))
            return phi_inverse(edited, kind, scale.to(act.dtype), sign_of=act)
        return phi_sea

    def explain(self, model: Any, context: str, answer: str) -> str:
        """Kept positive rank k+ and removed negative rank k- (medians over layers), the layers where the two
        subspaces coincide (then the edit cancels: see ``cancelled_layers``), and the edit's size."""
        ranks = torch.tensor(list(self.kept_ranks().values()), dtype=torch.float)
        k_pos, k_neg = (int(x) for x in ranks.median(dim=0).values)
        size = self.answer_edit_sizes(model, context, answer).mean()
        cancelled = self.cancelled_layers()
        note = f"; the edit cancels at {len(cancelled)} of {len(self.layers)} layers" if cancelled else ""
        return (f"keeps the top {k_pos} of {self.model.d_model} positive directions and removes the top {k_neg} "
                f"negative ones (medians{self._layer_text()}){note}: moves the answer by {100 * size:.1f}% of "
                "its norm")

    def cancelled_layers(self, threshold: float = 0.99) -> list[int]:
        """Layers where the kept and the removed subspaces coincide (k+ = k- and every principal cosine between
        them at least ``threshold``). There ``P+ z + (I - P-) z = z``: Eq. 4 gives back ``z`` and the layer is
        not edited. It happens when one direction holds nearly all of both cross-covariances' energy (the
        activations' mean direction, on a small model with few demonstrations)."""
        out = []
        for layer in self.layers:
            u_pos, u_neg = self.tensors[f"u_pos.{layer}"].double(), self.tensors[f"u_neg.{layer}"].double()
            if u_pos.shape[1] == u_neg.shape[1] > 0:
                cosines = torch.linalg.svdvals(u_pos.T @ u_neg)
                if float(cosines.min()) >= threshold:
                    out.append(layer)
        return out

    def kept_ranks(self) -> dict[int, tuple[int, int]]:
        """``{layer: (k+, k-)}``: kept positive rank and removed negative rank per layer."""
        return {layer: (self.tensors[f"u_pos.{layer}"].shape[1], self.tensors[f"u_neg.{layer}"].shape[1])
                for layer in self.layers}
