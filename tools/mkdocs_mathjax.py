"""mkdocs hook: put MathJax in the built site, so every page renders its maths offline (no CDN at run time).

The renderer comes from the pinned PyPI package ``jupyter-server-mathjax`` (MathJax 2.7, BSD licence: the copy
the Jupyter tools serve offline); it is copied into ``site/assets/mathjax`` after the build. Notebook pages load
it through mkdocs-jupyter's ``custom_mathjax_url``; Markdown pages through ``docs/javascripts/mathjax.js``. That
copy ships the STIX-Web fonts only, so both load ``config/local/steerlens.js`` (written here), which makes the
HTML-CSS output use them (MathJax's default, the TeX fonts, would be fetched and fail: "Math Processing Error").
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def on_post_build(config: Any, **kwargs: Any) -> None:
    try:
        import jupyter_server_mathjax
    except ImportError as e:  # the docs extra pins it; say so instead of building a site that shows raw TeX
        raise SystemExit("the docs site needs jupyter-server-mathjax (pip install -e '.[docs]')") from e
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = Path(config["site_dir"]) / "assets" / "mathjax"
    shutil.copytree(source, target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("localization", "*.md", "unpacked"))
    local = target / "config" / "local"
    local.mkdir(parents=True, exist_ok=True)
    (local / "steerlens.js").write_text(LOCAL_CONFIG, encoding="utf-8")


def on_post_page(output: str, page: Any, config: Any, **kwargs: Any) -> str:
    """mkdocs-jupyter's ``custom_mathjax_url`` is one relative URL (``../assets/...``, right for the pages one
    folder down, ``notebooks/``); the exercise variants sit a folder deeper, so their pages get their own depth."""
    depth = page.file.dest_uri.count("/")
    if depth == 1 or "../assets/mathjax/MathJax.js" not in output:
        return output
    return output.replace('"../assets/mathjax/MathJax.js', '"' + "../" * depth + "assets/mathjax/MathJax.js")


LOCAL_CONFIG = """MathJax.Hub.Config({
  "HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null},
  messageStyle: "none"
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/steerlens.js");
"""
