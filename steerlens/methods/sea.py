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


def spectral_bases(
    h: Float[torch.Tensor, "n d"],
    h_pos: Float[torch.Tensor, "n d"],
    h_neg: Float[torch.Tensor, "n d"],
    k_pos: float = 0.99,
    k_neg: float | None = 0.99,
) -> tuple[Float[torch.Tensor, "d kp"], Float[torch.Tensor, "d kn"], dict[str, torch.Tensor]]:
    """The kept positive basis ``U+[:, :k+]`` and the removed negative basis ``U-[:, :k-]``.

    ``k_neg=None`` removes nothing. Also returns the singular values (for the spectra plots).
    """
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
                              progress: bool = True) -> dict[str, dict[int, torch.Tensor]]:
    """``{"neutral"|"positive"|"negative": {layer: [n, d]}}`` at the last token of prompt + answer.

    Repeated texts (e.g. one neutral answer shared by several demonstrations of a question) run once.
    """
    out = {}
    for which in ("neutral", "positive", "negative"):
        texts = demos.texts(model, which)
        unique = list(dict.fromkeys(texts))
        acts = collect_activations(model, unique, layers=layers, position="last",
                                   batch_size=batch_size, progress=progress)
        where = {t: i for i, t in enumerate(unique)}
        idx = torch.tensor([where[t] for t in texts])
        out[which] = {layer: acts[resid_hook_name(layer)][idx] for layer in layers}
    return out


# -- the editor -----------------------------------------------------------------------------------------
@register
class SpectralEditor(Editor):
    """SEA / Phi-SEA editor. Settings: ``k_pos``, ``k_neg`` (energy thresholds), ``feature_map``.

    Tensors per layer: ``u_pos.{L}`` [d, k+], ``u_neg.{L}`` [d, k-], ``s_pos.{L}``, ``s_neg.{L}``
    (singular values, for plots), ``phi_scale.{L}`` [d] and ``sink_norm.{L}``.
    """

    method = "sea"
    settings_spec = (
        Setting("layers", "layers", list(range(15, 30)), "the layers whose residual stream is edited", saved=False),
        Setting("k", "float", 0.99, "the energy both subspaces keep (K+ = K-, paper Sec. 3.2)", low=0.0,
                high=1.0, open_low=True, saved=False),
        Setting("k_pos", "float", 0.99, "energy of the kept (positive) subspace", low=0.0, high=1.0, open_low=True,
                recipe=False),
        Setting("k_neg", "float", 0.99, "energy of the removed (negative) subspace", low=0.0, high=1.0,
                open_low=True, optional=True, recipe=False),
        Setting("feature_map", "str", "linear", "Phi-SEA's feature map", choices=("linear", "tanh", "elu", "sqexp"),
                recipe=False),
    )
    tensor_spec = (TensorSpec("u_pos.{L}", ("d_model", "*")), TensorSpec("u_neg.{L}", ("d_model", "*")),
                   TensorSpec("s_pos.{L}", ("*",)), TensorSpec("s_neg.{L}", ("*",)),
                   TensorSpec("phi_scale.{L}", ("d_model",)), TensorSpec("sink_norm.{L}", (), optional=True))
    task_defaults = {"truthfulqa": {"layers": list(range(10, 30)), "k": 0.998}}
    demo_notes = {"truthfulness": (
        "SEA projects every activation at layers 10-29 onto directions shared with true answers and off those "
        "shared with false ones. Besides the answer, each line says whether the model scores the true answer "
        "above every false one (log-probability margin), unsteered and steered: SEA's gain on held-out "
        "TruthfulQA questions is a few points of accuracy, so most single questions move little.")}

    @classmethod
    def for_task(cls, model: Any, task: Any, settings: dict[str, Any]) -> SpectralEditor:
        """The task's contrast pairs as demonstrations; for TruthfulQA with the model's own neutral answers of
        ``TRUTHFULQA_NEUTRAL_TOKENS`` tokens (as in ``benchmarks/sea_truthfulqa.py``, where K and the layers
        were chosen)."""
        demos = task.contrast_pairs()
        if task.name == "truthfulqa":
            demos = demos.with_neutral(model, max_new_tokens=TRUTHFULQA_NEUTRAL_TOKENS, batch_size=32,
                                       progress=task.progress)
        return cls.fit(model, demos, layers=settings["layers"], k_pos=settings["k"], k_neg=settings["k"],
                       progress=task.progress)

    @classmethod
    @checked_settings
    def fit_activations(cls, spec: ModelSpec, acts: dict[str, dict[int, torch.Tensor]], layers: Sequence[int],
                        k_pos: float = 0.99, k_neg: float | None = 0.99,
                        feature_map: FeatureMap = "linear") -> SpectralEditor:
        """Fit from precomputed demonstration activations (see ``demonstration_activations``)."""
        tensors: dict[str, torch.Tensor] = {}
        for layer in layers:
            h, hp, hn = (acts[w][layer].float() for w in ("neutral", "positive", "negative"))
            for x, what in ((h, "neutral"), (hp, "positive"), (hn, "negative")):
                check_finite(x, f"{what} activations at layer {layer}")
            scale = torch.cat([h, hp, hn]).std(dim=0).clamp_min(_EPS) if feature_map != "linear" \
                else torch.ones(h.shape[1])
            fh, fp, fn = (phi(x, feature_map, scale) for x in (h, hp, hn))
            u_pos, u_neg, spectra = spectral_bases(fh, fp, fn, k_pos, k_neg)
            tensors.update({f"u_pos.{layer}": u_pos, f"u_neg.{layer}": u_neg, f"phi_scale.{layer}": scale,
                            f"s_pos.{layer}": spectra["s_pos"], f"s_neg.{layer}": spectra["s_neg"],
                            f"sink_norm.{layer}": sink_threshold(torch.cat([h, hp, hn]).norm(dim=-1))})
        settings = {"k_pos": k_pos, "k_neg": k_neg, "feature_map": feature_map}
        return cls(model=spec, layers=list(layers), settings=settings, tensors=tensors)

    @classmethod
    @checked_settings
    def fit(cls, model: Any, demos: Demonstrations, layers: Sequence[int] | None = None, k_pos: float = 0.998,
            k_neg: float | None = 0.998, feature_map: FeatureMap = "linear", progress: bool = True) -> SpectralEditor:
        """Generate neutral answers if missing, collect activations, and fit (paper Alg. 1).

        Defaults: the last two thirds of the layers and K = 99.8% for both subspaces, the best mean
        2-fold cross-validated setting on TruthfulQA's development split for SmolLM2-135M-Instruct
        (``benchmarks/sea_truthfulqa.py``); the paper's best was K = 99.8% on 21 of 32 layers.
        """
        n = model.cfg.n_layers
        layers = check_layers(list(range(n // 3, n) if layers is None else layers), n)
        demos = demos.with_neutral(model, progress=progress)
        acts = demonstration_activations(model, demos, layers, progress=progress)
        return cls.fit_activations(ModelSpec.of(model), acts, layers, k_pos, k_neg, feature_map)

    def hook_fn(self, layer: int) -> HookFn:
        u_pos, u_neg = self.tensors[f"u_pos.{layer}"], self.tensors[f"u_neg.{layer}"]
        kind = self.settings["feature_map"]
        scale = self.tensors[f"phi_scale.{layer}"]

        if kind == "linear":
            def sea(act: torch.Tensor, hook: Any) -> torch.Tensor:
                return spectral_edit(act, u_pos.to(act.dtype), u_neg.to(act.dtype))
            return sea

        def phi_sea(act: torch.Tensor, hook: Any) -> torch.Tensor:
            f = phi(act, kind, scale.to(act.dtype))
            edited = spectral_edit(f, u_pos.to(act.dtype), u_neg.to(act.dtype))
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
