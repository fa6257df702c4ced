"""Plots draw from fitted editors; edit_magnitudes measures what the hooks actually change."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from steerlens import plotting  # noqa: E402
from steerlens.editing import ModelSpec, edit_magnitudes  # noqa: E402
from steerlens.methods.baselines import IdentityEditor  # noqa: E402
from steerlens.methods.sea import SpectralEditor  # noqa: E402


def sea_editor(model):
    g = torch.Generator().manual_seed(0)
    d = model.cfg.d_model
    acts = {w: {la: torch.randn(100, d, generator=g) for la in (1, 2)} for w in ("neutral", "positive", "negative")}
    return SpectralEditor.fit_activations(ModelSpec.of(model), acts, [1, 2], 0.9, 0.9)


def test_edit_magnitudes_zero_for_identity_positive_for_sea(tiny):
    tokens = torch.tensor([[3, 4, 5, 6, 7]])
    sizes, labels = edit_magnitudes(tiny, IdentityEditor.fit(tiny, [0, 2]), tokens)
    assert sizes.shape == (2, 5) and labels == ["3", "4", "5", "6", "7"]
    assert torch.all(sizes == 0)
    sizes, _ = edit_magnitudes(tiny, sea_editor(tiny), tokens)
    assert sizes.shape == (2, 5) and torch.all(sizes > 0)


def test_sea_plots_draw(tiny):
    ed = sea_editor(tiny)
    for fig in (plotting.sea_spectra(ed), plotting.sea_energy(ed, 1), plotting.sea_ranks(ed)):
        assert fig.axes and any(ax.lines or ax.patches for ax in fig.axes)
    sizes, labels = edit_magnitudes(tiny, ed, torch.tensor([[1, 2, 3]]))
    fig = plotting.edit_heatmap(sizes, labels, ed.layers)
    assert fig.axes[0].images


def test_pace_plots_draw():
    k, t = 30, 6
    c = torch.zeros(t, k)
    c[:, 3], c[:, 7] = 1.0, -0.5
    decomp = {"coefficients": c, "concepts": [f"c{i}" for i in range(k)], "tokens": list("abcdef"),
              "undesirable": torch.arange(k) == 3, "norm": torch.ones(t), "removed": torch.full((t,), 0.3),
              "explained": torch.full((t,), 0.9), "residual": torch.full((t,), 0.2)}
    fig = plotting.pace_heatmap(decomp, top=5)
    labels = {lab.get_text(): lab.get_color() for lab in fig.axes[0].get_yticklabels()}
    assert labels["c3"] == "red" and labels["c7"] != "red"
    fig = plotting.pace_token_bars(decomp, token=2, top=4)
    assert len(fig.axes[0].patches) == 4
    fig = plotting.pace_removed_vs_kept(decomp)
    assert len(fig.axes[0].lines) == 3


def test_value_gradient_plots_draw_the_cells_they_are_given():
    from steerlens.analysis import ValueGradient

    cos = torch.linspace(-1, 1, 4 * 6).reshape(4, 6)
    grad = ValueGradient(cos, torch.ones(4, 6), cos)
    fig = plotting.value_gradient_plot(grad, [f"t{i}" for i in range(6)])
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (4, 5)  # the sink token left out
    torch.testing.assert_close(torch.tensor(image.data), cos[:, 1:])
    fig = plotting.value_gradient_table([{"family": "linear", "target": "mc", "val_corr": 0.3, "cosine": 0.6},
                                         {"family": "mlp", "target": "td", "val_corr": 0.4, "cosine": 0.1}])
    assert len(fig.axes[0].collections) == 2


def test_removal_profile_plot_draws_the_cells_it_is_given():
    from steerlens.analysis import RemovalProfile

    share = torch.arange(12.0).reshape(2, 6) / 12
    sink = torch.tensor([True, False, False, False, False, False])
    prof = RemovalProfile([f"t{i}" for i in range(6)], [3, 5], share, torch.full((2, 6), 0.5), 4, sink)
    fig = plotting.removal_profile_plot(prof)
    drawn = fig.axes[0].images[0].get_array()
    assert drawn.shape == (2, 6) and drawn.mask[:, 0].all()  # the sink is greyed out, not drawn
    assert float(drawn[1, 5]) == float(share[1, 5])
    assert len(fig.axes[1].patches) == 6


def test_edit_comparison_plot_shares_one_colour_scale():
    from steerlens.analysis import EditComparison

    sizes = torch.zeros(2, 4, 5)
    sizes[0, 1] = 0.2
    sizes[1, 3] = 0.6
    cmp = EditComparison(["a", "b"], [f"t{i}" for i in range(5)], sizes, torch.rand(2, 5), {"a": {}, "b": {}})
    fig = plotting.edit_comparison_plot(cmp)
    limits = [fig.axes[i].images[0].get_clim() for i in (0, 1)]
    assert limits[0] == limits[1] and abs(limits[0][1] - 0.6) < 1e-6 and limits[0][0] == 0.0
    assert len(fig.axes[2].lines) == 2


def test_geometry_plot_labels_each_cell_and_leaves_missing_pairs_blank():
    from steerlens.analysis import GeometryTable

    table = GeometryTable([3, 4], ["a vs b", "a vs c"], torch.tensor([[10.0, float("nan")], [80.0, 45.0]]))
    fig = plotting.geometry_plot(table)
    labels = sorted(t.get_text() for t in fig.axes[0].texts)
    assert labels == ["10", "45", "80"]


def test_divergence_html_escapes_and_marks_the_first_divergence():
    from steerlens.analysis import DivergenceTrace

    trace = DivergenceTrace("a <b>", ["x", "y"], ["x", "<z>"], 1, 0.5, 1.5, torch.tensor([0.0, 2.0]),
                            torch.tensor([[0.1, 0.2]]), ["blocks.1.hook_resid_post"], ["", "note & more"])
    html = plotting.divergence_html(trace)
    assert "&lt;z&gt;" in html and "<z>" not in html and "a &lt;b&gt;" in html
    assert html.count("outline") == 2  # the first divergent token in both rows
    assert "background:rgb(255,63,63)" in html  # the largest KL is the reddest
    assert "note &amp; more" in html and "part at new token 1" in html


def _frontier_result(key, values):
    rows = [{"value": v, "perplexity_ratio": 1.0 + 0.1 * i, "perplexity_low": 0.95 + 0.1 * i,
             "perplexity_high": 1.05 + 0.1 * i, "change": -0.1 * i, "change_low": -0.1 * i - 0.05,
             "change_high": -0.1 * i + 0.05} for i, v in enumerate(values)]
    return {"method": "methods" if key == "method" else "actadd", "task": "detox", "key": key, "n": 10,
            "metric": "offensive_prob", "rows": rows}


def test_frontier_joins_a_sweep_but_not_methods():
    """A swept setting is an ordered curve (one line through its points, each labelled); methods are
    categories: one marker each, in the legend, no line joining them."""
    import matplotlib.pyplot as plt

    fig = plotting.sweep_frontier(_frontier_result("alpha", [0.1, 0.2, 0.3]))
    ax = fig.axes[0]
    assert any(len(line.get_xdata()) == 3 and line.get_linestyle() == "-" for line in ax.get_lines())
    assert len(ax.texts) == 3
    plt.close(fig)
    fig = plotting.sweep_frontier(_frontier_result("method", ["actadd", "pace", "sea"]))
    ax = fig.axes[0]
    assert all(len(line.get_xdata()) <= 1 for line in ax.get_lines() if line.get_linestyle() != "None")
    assert not ax.texts
    labels = ax.get_legend_handles_labels()[1]
    assert {"actadd", "pace", "sea"} <= set(labels)
    plt.close(fig)
