// Typeset the Markdown pages' maths (pymdownx.arithmatex, generic mode) with the MathJax copied into the site
// (tools/mkdocs_mathjax.py): nothing is loaded from a CDN. Notebook pages load their own MathJax (the same copy,
// through mkdocs-jupyter's custom_mathjax_url), so this script leaves them alone.
(function () {
  if (document.querySelector('script[src*="MathJax.js"]')) return;
  window.MathJax = {
    skipStartupTypeset: false,
    messageStyle: "none",
    showMathMenu: false,
    tex2jax: {
      inlineMath: [["\\(", "\\)"]],
      displayMath: [["\\[", "\\]"]],
      processEscapes: true,
      processEnvironments: true,
      ignoreClass: ".*",
      processClass: "arithmatex"
    }
  };
  var here = document.currentScript ? document.currentScript.src : document.baseURI;
  var script = document.createElement("script");
  script.src = new URL("../assets/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,local/steerlens", here).href;
  document.head.appendChild(script);
})();
