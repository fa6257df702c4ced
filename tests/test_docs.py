"""The docs site: `mkdocs build --strict` passes (every warning an error) with the notebooks rendered from their
committed outputs and the API reference from the docstrings, and its pages render in a headless browser.

The browser test skips only where no Chromium is installed (`.ci/run` installs Debian's)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_PAGE = "notebooks/06_geometry_and_controls.html"  # two figures: the geometry table, the frontier


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for module in ("mkdocs", "material", "mkdocs_jupyter", "mkdocstrings"):
        pytest.importorskip(module, reason="the docs extra is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return out


def test_site_has_the_pages_the_notebook_figures_and_the_api(site):
    for page in ("index.html", "methods.html", "results.html", "analysis.html", NOTEBOOK_PAGE,
                 "notebooks/05_one_prompt_every_edit.html", "notebooks/07_pitfalls.html", "notebooks/03_pace.html",
                 "api/analysis.html"):
        assert (site / page).is_file(), page
    assert (site / NOTEBOOK_PAGE).read_text().count("data:image/png;base64") >= 2  # the committed run's figures
    assert "data:image/png;base64" in (site / "notebooks/05_one_prompt_every_edit.html").read_text()
    assert "divergence_trace" in (site / "api/analysis.html").read_text()
    assert "0.62x" in (site / "results.html").read_text()  # the README's results, included, not copied
    exercise = site / "notebooks/exercises/03_pace.html"  # the exercise variants are pages too, blanks and hints
    assert exercise.is_file() and "# your code here" in exercise.read_text()
    assert '"../../assets/mathjax/MathJax.js' in exercise.read_text()  # MathJax from their depth


def _not_blank(png: Path) -> float:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))
    return float(pixels[..., :3].std())


def test_pages_render_in_a_headless_browser(site, tmp_path):
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if chromium is None:
        pytest.skip("no Chromium installed here (.ci/run installs Debian's chromium package)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the docs extra")
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((site / "index.html").as_uri(), wait_until="load")
            assert "steerlens" in page.title()
            page.screenshot(path=str(tmp_path / "home.png"))
            page.goto((site / NOTEBOOK_PAGE).as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : -1)")
            page.locator("img").first.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "notebook.png"))
        finally:
            browser.close()
    assert len(widths) >= 2 and all(w > 0 for w in widths), widths  # every figure decoded and drawn
    for shot in ("home.png", "notebook.png"):
        assert _not_blank(tmp_path / shot) > 0.02, f"{shot} looks blank"


# what a page shows as text where its maths did not render: TeX delimiters or commands in the prose
RAW_TEX = (r"\$\$|\\\(|\\\[|\\(frac|mathbf|mathrm|arg|min|max|sum|top|star|alpha|beta|lambda|cos|theta|mathbb"
           r"|tfrac|hat|operatorname)\b")
PROSE = "article p, article li, article h1, article h2, article h3, article td, .jp-RenderedMarkdown, .text_cell_render"


def test_every_page_renders_its_maths_offline(site):
    """Every notebook page and every Markdown page: MathJax (copied into the site from a pinned package)
    typesets the maths without an error, no prose shows raw TeX, no file the page asks for is missing, and the
    page asks no other host for anything (every request that is not a local file is refused and counted)."""
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if chromium is None:
        pytest.skip("no Chromium installed here (.ci/run installs Debian's chromium package)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the docs extra")
    assert (site / "assets" / "mathjax" / "MathJax.js").is_file()
    pages = sorted(str(p.relative_to(site)) for p in site.glob("*.html") if p.name not in ("404.html",))
    pages += sorted(str(p.relative_to(site)) for p in (site / "notebooks").glob("*.html"))
    pages += sorted(str(p.relative_to(site)) for p in (site / "notebooks" / "exercises").glob("*.html"))
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    outside, raw, typeset, errors, missing = [], {}, {}, {}, []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        try:
            page = browser.new_page()
            # MathJax's HTML-CSS output probes for its own TeX fonts before it uses STIX-Web, which the copy ships
            probe = "/assets/mathjax/fonts/HTML-CSS/TeX/otf/"
            page.on("requestfailed", lambda r: missing.append(r.url)
                    if r.url.startswith("file:") and probe not in r.url else None)
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                       else (outside.append(route.request.url), route.abort())[1])
            for name in pages:
                page.goto((site / name).as_uri(), wait_until="load")
                page.wait_for_function("() => window.MathJax && window.MathJax.Hub", timeout=30000)
                page.evaluate("() => new Promise(done => MathJax.Hub.Queue(() => done(true)))")
                typeset[name] = page.evaluate("() => document.querySelectorAll('.MathJax, .MathJax_Display').length")
                errors[name] = page.evaluate("() => document.querySelectorAll('.MathJax_Error').length"
                                             " + (document.body.innerText.includes('Math Processing Error') ? 1 : 0)")
                raw[name] = page.evaluate(
                    "([sel, pattern]) => Array.from(document.querySelectorAll(sel)).map(e => e.innerText)"
                    ".filter(t => new RegExp(pattern).test(t)).map(t => t.slice(0, 120))", [PROSE, RAW_TEX])
        finally:
            browser.close()
    assert outside == [] and missing == []
    assert {k: v for k, v in raw.items() if v} == {}
    assert {k: v for k, v in errors.items() if v} == {}
    # the pages whose source holds maths (TeX delimiters): each shows typeset maths
    def source_has_maths(name: str) -> bool:
        text = re.sub(r"(?s)<script.*?</script>", "", (site / name).read_text(encoding="utf-8"))
        return bool(re.search(r"\$\$|\\\(|\$\\", text))

    with_maths = [n for n in pages if source_has_maths(n)]
    assert {"analysis.html", "notebooks/02_sea.html", "notebooks/03_pace.html"} <= set(with_maths)
    assert all(typeset[n] > 0 for n in with_maths), {n: typeset[n] for n in with_maths}


def test_the_raw_tex_check_can_fail():
    for shown in ("$$c^\\star = 1$$", "the map \\(x\\)", "\\frac{a}{b}", "argmin \\mathbf{c}"):
        assert re.search(RAW_TEX, shown), shown
    assert not re.search(RAW_TEX, "PaCE removes 0.7% of the norm; $5 and a backslash \\ alone")
