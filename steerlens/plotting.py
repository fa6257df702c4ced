"""Matplotlib views of fitted editors and activations. Each function draws one figure and returns it.

Plotting only reads fitted objects and tensors; the numbers come from the method modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure


def _layers(editor: Any, layers: Sequence[int] | None) -> list[int]:
    return list(editor.layers if layers is None else layers)


def sea_spectra(editor: Any, layers: Sequence[int] | None = None) -> Figure:
    """Singular values of the positive and negative cross-covariances, per layer (log scale)."""
    layers = _layers(editor, layers)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    cmap = plt.get_cmap("viridis")
    for i, layer in enumerate(layers):
        colour = cmap(i / max(1, len(layers) - 1))
        for ax, key in zip(axes, ("s_pos", "s_neg"), strict=True):
            s = editor.tensors[f"{key}.{layer}"].double()
            ax.semilogy((s / s[0]).clamp_min(1e-12).numpy(), color=colour, lw=1, label=f"L{layer}")
    axes[0].set_title("positive cross-covariance $H^T H^+/n$")
    axes[1].set_title("negative cross-covariance $H^T H^-/n$")
    for ax in axes:
        ax.set_xlabel("singular value index")
    axes[0].set_ylabel("s_j / s_1")
    if len(layers) <= 12:
        axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def sea_energy(editor: Any, layer: int) -> Figure:
    """Cumulative energy ``sum_{j<=k} s_j^2 / sum s^2`` for one layer, with the chosen K and ranks marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, setting, label, colour in (("s_pos", "k_pos", "positive (kept top k+)", "tab:green"),
                                        ("s_neg", "k_neg", "negative (removed top k-)", "tab:red")):
        s = editor.tensors[f"{key}.{layer}"].double()
        cum = (s**2).cumsum(0) / (s**2).sum()
        ax.plot(cum.numpy(), color=colour, label=label)
        k_energy = editor.settings[setting]
        if k_energy is not None:
            k = editor.tensors[f"u_{key[2:]}.{layer}"].shape[1]
            ax.axhline(k_energy, color=colour, ls=":", lw=1)
            ax.axvline(k - 1, color=colour, ls="--", lw=1)
    ax.set_xscale("symlog")
    ax.set_xlabel("k")
    ax.set_ylabel("cumulative energy")
    ax.set_title(f"layer {layer}: energy threshold K and chosen ranks")
    ax.legend()
    fig.tight_layout()
    return fig


def sea_ranks(editor: Any) -> Figure:
    """Kept positive rank k+ and removed negative rank k- per layer."""
    ranks = editor.kept_ranks()
    layers = sorted(ranks)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = torch.arange(len(layers)).float()
    ax.bar((x - 0.2).numpy(), [ranks[la][0] for la in layers], width=0.4, color="tab:green", label="kept k+")
    ax.bar((x + 0.2).numpy(), [ranks[la][1] for la in layers], width=0.4, color="tab:red", label="removed k-")
    ax.set_xticks(x.numpy(), [str(la) for la in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("rank")
    ax.legend()
    fig.tight_layout()
    return fig


def edit_heatmap(sizes: torch.Tensor, tokens: Sequence[str], layers: Sequence[int],
                 title: str = "relative edit size ||z' - z|| / ||z||") -> Figure:
    """Heatmap of an edit's size per layer (rows) and token (columns), from ``edit_magnitudes``."""
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(tokens)), 0.3 * len(layers) + 2))
    im = ax.imshow(sizes.numpy(), aspect="auto", cmap="magma")
    ax.set_xticks(range(len(tokens)), [repr(t)[1:-1] for t in tokens], rotation=70, fontsize=7)
    ax.set_yticks(range(len(layers)), [str(la) for la in layers], fontsize=7)
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def pace_heatmap(decomp: dict[str, Any], top: int = 20, skip_first: bool = True) -> Figure:
    """Coefficients of the ``top`` concepts (by total |c| over tokens) per token; undesirable in red."""
    c = decomp["coefficients"][1:] if skip_first else decomp["coefficients"]
    tokens = decomp["tokens"][1:] if skip_first else decomp["tokens"]
    idx = c.abs().sum(0).topk(min(top, c.shape[1])).indices
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(tokens)), 0.28 * len(idx) + 2))
    lim = float(c[:, idx].abs().max()) or 1.0
    im = ax.imshow(c[:, idx].T.numpy(), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(tokens)), [repr(t)[1:-1] for t in tokens], rotation=70, fontsize=7)
    ax.set_yticks(range(len(idx)), [decomp["concepts"][i] for i in idx.tolist()], fontsize=7)
    for label, i in zip(ax.get_yticklabels(), idx.tolist(), strict=True):
        if bool(decomp["undesirable"][i]):
            label.set_color("red")
    ax.set_title("concept coefficients per token (undesirable concepts in red)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def pace_token_bars(decomp: dict[str, Any], token: int = -1, top: int = 15) -> Figure:
    """The ``top`` concepts of one token by |coefficient|; undesirable ones in red."""
    c = decomp["coefficients"][token]
    idx = c.abs().topk(min(top, len(c))).indices.tolist()[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(idx) + 1.5))
    colours = ["tab:red" if bool(decomp["undesirable"][i]) else "tab:blue" for i in idx]
    ax.barh(range(len(idx)), [float(c[i]) for i in idx], color=colours)
    ax.set_yticks(range(len(idx)), [decomp["concepts"][i] for i in idx])
    ax.set_xlabel("coefficient")
    ax.set_title(f"top concepts at token {decomp['tokens'][token]!r}")
    fig.tight_layout()
    return fig


def pace_removed_vs_kept(decomp: dict[str, Any], skip_first: bool = True) -> Figure:
    """Per token, relative to ||z||: the removed part, the explained part, and the residual (kept)."""
    s = slice(1, None) if skip_first else slice(None)
    norm = decomp["norm"][s]
    tokens = decomp["tokens"][s]
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(tokens)), 3.5))
    for key, colour in (("removed", "tab:red"), ("explained", "tab:blue"), ("residual", "tab:gray")):
        ax.plot((decomp[key][s] / norm).numpy(), marker="o", color=colour, label=f"||{key}|| / ||z||")
    ax.set_xticks(range(len(tokens)), [repr(t)[1:-1] for t in tokens], rotation=70, fontsize=7)
    ax.legend()
    ax.set_title("what PaCE removes and keeps, per token")
    fig.tight_layout()
    return fig


def bench_tradeoff(results: Sequence[dict], metric: str) -> Figure:
    """One task's bench results: the change in ``metric`` against time relative to the unsteered model."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in results:
        x = r["seconds"]["steered"] / max(r["seconds"]["unsteered"], 1e-9)
        y = r["steered"][metric] - r["unsteered"][metric]
        ax.scatter([x], [y])
        ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("time relative to the unsteered model")
    ax.set_ylabel(f"change in {metric}")
    if results:
        ax.set_title(f"{results[0]['task']} ({results[0]['n']} items)")
    return fig


def value_heatmap(values: torch.Tensor, tokens: Sequence[str], skip_first: bool = True) -> Figure:
    """RE-Control: V per layer (rows; the last row is the final state) and token, from ``value_lens``."""
    v, labels = (values[:, 1:], list(tokens)[1:]) if skip_first else (values, list(tokens))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(labels)), 5))
    im = ax.imshow(v.numpy(), aspect="auto", cmap="RdYlGn", origin="lower")
    ax.set_xticks(range(len(labels)), labels, rotation=70, fontsize=7)
    ax.set_ylabel("layer (top row: final state)")
    ax.set_title("value V per layer and token")
    fig.colorbar(im, ax=ax)
    return fig


def value_landscape_plot(land: dict[str, torch.Tensor]) -> Figure:
    """RE-Control: V around a state along the gradient and a random direction, with the ascent path."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cs = ax.contourf(land["b"].numpy(), land["a"].numpy(), land["values"].numpy(), levels=20, cmap="RdYlGn")
    ax.plot(land["path"][:, 1].numpy(), land["path"][:, 0].numpy(), "k.-", label="gradient ascent")
    ax.plot([0], [0], "ko", ms=8, label="unedited state")
    ax.set_xlabel("random direction")
    ax.set_ylabel("gradient direction")
    ax.legend(fontsize=8)
    fig.colorbar(cs, ax=ax, label="V")
    return fig


def ascent_trajectory(path_values: torch.Tensor) -> Figure:
    """RE-Control: V after each gradient-ascent step."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(len(path_values)), path_values.numpy(), "o-")
    ax.set_xlabel("step")
    ax.set_ylabel("V(s + u)")
    return fig


def value_gradient_plot(grad: Any, tokens: Sequence[str], skip_first: bool = True) -> Figure:
    """RE-Control's gradient diagnostic from ``analysis.value_gradient_map``: left, the cosine of grad V with
    the reference direction per layer (rows; the top row is the final state) and token, on a fixed -1..1
    scale; right, the value gained per unit of edit norm (``gain``) per layer, averaged over the tokens."""
    cos, gain = grad.cosine, grad.gain
    if skip_first:  # the first token is the attention sink: its state is unlike any other
        cos, gain, tokens = cos[:, 1:], gain[:, 1:], list(tokens)[1:]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(max(8, 0.35 * len(tokens) + 3), 5),
                                 gridspec_kw={"width_ratios": [4, 1]})
    im = ax.imshow(cos.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1, origin="lower")
    ax.set_xticks(range(len(tokens)), tokens, rotation=70, fontsize=7)
    ax.set_ylabel("layer (top row: final state)")
    ax.set_title("cos(grad V, reference) per layer and token")
    fig.colorbar(im, ax=ax)
    bx.barh(range(gain.shape[0]), gain.mean(1).numpy())
    bx.set_ylim(-0.5, gain.shape[0] - 0.5)
    bx.set_xlabel("|grad V| (value per unit edit)")
    bx.set_yticks([])
    fig.tight_layout()
    return fig


def value_gradient_table(rows: Sequence[dict[str, Any]]) -> Figure:
    """Held-out correlation against gradient cosine, one point per fitted value function (``family``,
    ``target``, ``val_corr``, ``cosine`` keys): prediction and direction are different things."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in rows:
        ax.scatter(r["val_corr"], r["cosine"], s=40)
        ax.annotate(f"{r['family']}/{r['target']}", (r["val_corr"], r["cosine"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("held-out corr(V(s_t), reward)")
    ax.set_ylabel("cos(grad V, reference)")
    ax.set_title("prediction vs direction")
    fig.tight_layout()
    return fig


def removal_profile_plot(profile: Any, max_share: float | None = None) -> Figure:
    """PaCE's ``analysis.removal_profile`` of one text: top, the undesirable share ``||D_U c_U|| / ||z||`` per
    layer (rows) and token, the prompt's end marked by a dashed line; bottom, the residual share (outside the
    dictionary's span, kept by PaCE), averaged over layers. Attention sinks are greyed out."""
    share = profile.share.clone()
    share[:, profile.sink] = float("nan")
    tokens = list(profile.tokens)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(max(8, 0.32 * len(tokens) + 2), 5.5), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    vmax = max_share if max_share is not None else float(torch.nan_to_num(share, nan=0.0).max()) or 1.0
    im = ax.imshow(share.numpy(), aspect="auto", cmap="Reds", vmin=0, vmax=vmax, origin="lower")
    ax.set_yticks(range(len(profile.layers)), [str(la) for la in profile.layers])
    ax.set_ylabel("layer")
    ax.set_title("undesirable share of ||z|| (what PaCE removes where it edits)")
    fig.colorbar(im, ax=[ax, bx], shrink=0.8)
    resid = profile.residual.mean(0).clone()
    resid[profile.sink] = float("nan")
    bx.bar(range(len(tokens)), resid.numpy(), color="grey")
    bx.set_ylim(0, 1)
    bx.set_ylabel("residual share")
    for a in (ax, bx):
        a.axvline(profile.prompt_len - 0.5, color="k", ls="--", lw=1)
    bx.set_xticks(range(len(tokens)), tokens, rotation=70, fontsize=7)
    return fig


def edit_comparison_plot(cmp: Any, skip_first: bool = True) -> Figure:
    """``analysis.compare_edits``: one heatmap per editor of the edit size per layer (rows; the top row is the
    final state) and token, all on one colour scale so the methods compare at a glance; below, each
    editor's KL(steered || unsteered) of the next-token distribution per token."""
    sizes, kl, tokens = cmp.sizes, cmp.kl, list(cmp.tokens)
    if skip_first:  # the attention sink: no method edits it
        sizes, kl, tokens = sizes[..., 1:], kl[:, 1:], tokens[1:]
    n = len(cmp.names)
    fig, axes = plt.subplots(n + 1, 1, figsize=(max(8, 0.32 * len(tokens) + 2), 2.2 * n + 2.2), sharex=True)
    vmax = float(sizes.max()) or 1.0
    for ax, name, s in zip(axes[:-1], cmp.names, sizes, strict=True):
        im = ax.imshow(s.numpy(), aspect="auto", cmap="magma", vmin=0, vmax=vmax, origin="lower")
        ax.set_ylabel(f"{name}\nlayer")
    fig.colorbar(im, ax=list(axes[:-1]), shrink=0.8, label="||edit|| / ||z||")
    for name, k in zip(cmp.names, kl, strict=True):
        axes[-1].plot(k.numpy(), marker=".", label=name)
    axes[-1].set_ylabel("KL (nats)")
    axes[-1].legend(fontsize=7, ncol=min(n, 5))
    axes[-1].set_xticks(range(len(tokens)), tokens, rotation=70, fontsize=7)
    return fig


def sweep_frontier(result: dict[str, Any]) -> Figure:
    """``steerlens sweep``: the metric's change against the perplexity ratio for each swept value, with their
    paired 95% bootstrap intervals; the unsteered model at (1, 0); with ``--control``, each value's
    equal-size random-direction control in grey. For ``run_methods`` results (one row per method) each method
    is its own marker in the legend, with no line joining them."""
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    x = [r["perplexity_ratio"] for r in rows]
    y = [r["change"] for r in rows]
    xerr = [[r["perplexity_ratio"] - r["perplexity_low"] for r in rows],
            [r["perplexity_high"] - r["perplexity_ratio"] for r in rows]]
    yerr = [[r["change"] - r["change_low"] for r in rows], [r["change_high"] - r["change"] for r in rows]]
    if result["key"] == "method":  # several methods (run_methods): categories, one marker each, no line
        for r, xi, yi, *err in zip(rows, x, y, *xerr, *yerr, strict=True):
            ax.errorbar([xi], [yi], xerr=[[err[0]], [err[1]]], yerr=[[err[2]], [err[3]]], fmt="o", capsize=3,
                        label=str(r["value"]))
    else:  # one setting swept: an ordered curve, each point labelled with its value
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o-", capsize=3, label=result["method"])
        for r in rows:
            ax.annotate(f"{result['key']}={r['value']}", (r["perplexity_ratio"], r["change"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
    controls = [r["control"] for r in rows if r.get("control")]
    if controls:
        ax.errorbar([c["perplexity_ratio"] for c in controls], [c["change"] for c in controls],
                    xerr=[[c["perplexity_ratio"] - c["perplexity_low"] for c in controls],
                          [c["perplexity_high"] - c["perplexity_ratio"] for c in controls]],
                    yerr=[[c["change"] - c["change_low"] for c in controls],
                          [c["change_high"] - c["change"] for c in controls]],
                    fmt="s--", color="0.6", capsize=3, label="random direction, equal size")
    ax.scatter([1.0], [0.0], marker="x", color="k", label="unsteered")
    ax.set_xlabel("perplexity ratio (steered / unsteered)")
    ax.set_ylabel(f"change in {result['metric']}")
    ax.set_title(f"{result['method']} on {result['task']} ({result['n']} prompts)")
    ax.legend()
    return fig


def divergence_html(trace: Any, max_kl: float | None = None) -> str:
    """``analysis.divergence_trace`` as coloured tokens: the unsteered continuation, then the steered one with
    each token's background the KL(steered || unsteered) at the position that produced it (white 0, red
    ``max_kl``, default the largest), the first divergent token outlined; hover a steered token for its KL,
    edit sizes and the editor's note. Plain HTML, no JavaScript (renders on GitHub and in the docs)."""
    from html import escape

    top = max_kl if max_kl is not None else max(float(trace.kl.max()) if len(trace.kl) else 0.0, 1e-6)

    def span(tok: str, style: str = "", title: str = "") -> str:
        shown = escape(tok).replace("\n", "&#8629;") or "&nbsp;"
        return (f'<span style="padding:1px 0;white-space:pre;{style}" title="{escape(title, quote=True)}">'
                f"{shown}</span>")

    outline = "outline:2px solid #1f77b4;"
    plain = "".join(span(t, outline if i == trace.first else "") for i, t in enumerate(trace.unsteered))
    steered = []
    for i, t in enumerate(trace.steered):
        level = min(float(trace.kl[i]) / top, 1.0)
        shade = int(255 * (1 - 0.75 * level))
        sizes = ", ".join(f"{h}: {100 * float(trace.sizes[j, i]):.1f}%" for j, h in enumerate(trace.hooks))
        title = f"token {i}: KL {float(trace.kl[i]):.3f} nats; edit {sizes}" + (
            f"; {trace.notes[i]}" if trace.notes[i] else "")
        steered.append(span(t, f"background:rgb(255,{shade},{shade});" + (outline if i == trace.first else ""),
                            title))
    if trace.first is None:
        verdict = "the steered and unsteered continuations are the same"
    else:
        verdict = (f"they part at new token {trace.first}"
                   + (f" (logit gap: unsteered {trace.gap_unsteered:.2f}, steered {trace.gap_steered:.2f})"
                      if trace.gap_unsteered is not None else ""))
    return ('<div style="font-family:monospace;line-height:1.8">'
            f"<div><b>prompt</b>: {escape(trace.prompt)}</div>"
            f"<div><b>unsteered</b>: {plain}</div><div><b>steered</b>: {''.join(steered)}</div>"
            f"<div style='font-size:90%'>{escape(verdict)}; background: KL(steered || unsteered), white 0 to red "
            f"{top:.2f} nats; hover a token for its edit</div></div>")


def geometry_plot(table: Any) -> Figure:
    """``analysis.geometry_table`` as a layer x pair grid of angles (degrees; dark = shared direction,
    light = orthogonal), each cell labelled, blank where a pair does not meet."""
    import numpy as np

    angles = table.angles.numpy()
    fig, ax = plt.subplots(figsize=(1.1 * len(table.pairs) + 3, 0.32 * len(table.layers) + 2))
    im = ax.imshow(np.ma.masked_invalid(angles), aspect="auto", cmap="magma", vmin=0, vmax=90)
    for i in range(angles.shape[0]):
        for j in range(angles.shape[1]):
            if not np.isnan(angles[i, j]):
                ax.text(j, i, f"{angles[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if angles[i, j] < 45 else "black")
    ax.set_xticks(range(len(table.pairs)), [p.replace(" vs ", "\nvs ") for p in table.pairs], rotation=45,
                  ha="right", fontsize=7)
    ax.set_yticks(range(len(table.layers)), [str(la) for la in table.layers])
    ax.set_ylabel("layer")
    ax.set_title("smallest principal angle between edited subspaces (degrees)")
    fig.colorbar(im, ax=ax, label="degrees")
    fig.tight_layout()
    return fig
