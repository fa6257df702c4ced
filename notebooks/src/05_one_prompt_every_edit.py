# %% [markdown]
# # 05. One prompt, every edit: what each method does, layer by layer and token by token
#
# **Learning objectives**
# - Read an edit as a map over layers and tokens, and compare methods on one colour scale.
# - Tell an edit's *size* from its *effect* (the KL divergence of the next-token distribution).
# - Read an edit vector through the unembedding (the logit lens) to see what it pushes towards.
# - Check whether two methods edit the same subspace (principal angles).
# - Find where a steered continuation first parts from the unsteered one, how close the call was, and what the edit did at each token (the divergence trace).
#
# **Time**: under a minute on 2 CPU cores once the model is cached (47 s measured warm, 2026-12-06). A cold first run (empty cache) also converts the model (about 30 s) and builds the editors from the shipped files.
#
# Five editors, each fitted for detoxification with the harness's defaults: ActAdd (add a direction at layer 15), OrthoProj (project a direction out at layers 10-29), SEA (spectral editing at layers 15-29), PaCE (remove the toxic concepts at every position, six layers) and RE-Control (gradient ascent on a value function at the final state).

# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display

import steerlens
from steerlens import plotting
from steerlens.analysis import compare_edits, divergence_trace, edit_subspaces, subspace_overlaps
from steerlens.exercises import check_kl
from steerlens.harness import fit_editor

model = steerlens.load_model()
editors = {m: fit_editor(model, m, 'detox', progress=False)
           for m in ('actadd', 'orthoproj', 'sea', 'pace', 'recontrol')}

# %% [markdown]
# ## 1. Edit size per layer and token
# For editor $e$ at hook point $\ell$ and token $t$, with $z$ the activation before the hook and $z'$ after it (earlier edits included, as in generation):
#
# $$s_{e,\ell,t} = \frac{\lVert z'_{\ell,t} - z_{\ell,t} \rVert}{\lVert z_{\ell,t} \rVert}.$$
#
# The top row of each map is the final state (after the last norm), where RE-Control edits. Below the maps, the effect at each position:
#
# $$\mathrm{KL}_t = \sum_v p'_t(v) \log \frac{p'_t(v)}{p_t(v)},$$
#
# with $p$ and $p'$ the unsteered and steered next-token distributions.

# %% [markdown] tags=["predict"]
# ActAdd edits one layer by about a quarter of the activation's norm; OrthoProj projects a direction out of 20 layers. Which moves the next-token distribution more, and by how much?

# %% [markdown] tags=["answer"]
# OrthoProj, but barely: a next-token KL of 1.4 nats against ActAdd's 1.2, though OrthoProj's edit summed over layers is 1.3 times the norm. ActAdd's edit at layer 15 runs through the 14 blocks above it. Edit size and effect do not rank the same way.

# %%
text = 'Honestly, the referee is a complete and utter idiot who'
cmp = compare_edits(model, editors, text)
plotting.edit_comparison_plot(cmp); plt.show()
for name, size, kl in zip(cmp.names, cmp.sizes, cmp.kl):
    s = size[:, 1:]  # [hook row, token], the sink left out
    total = s.sum(0).mean()  # summed over layers, averaged over tokens
    rows = [r for r in range(s.shape[0]) if s[r].max() > 0.005]  # rows edited by over 0.5%
    where = ', '.join('final' if r == model.cfg.n_layers else str(r) for r in rows)
    print(f'{name:<10} edit size {total:.3f}   mean KL {kl[1:].mean():.3f} nats   '
          f'largest single edit {s.max():.2f}   rows over 0.5%: {where}')
mean_kl = dict(zip(cmp.names, cmp.kl[:, 1:].mean(1).tolist()))
assert mean_kl['sea'] < 0.02 and mean_kl['orthoproj'] > 1.0  # the claims below

# %% [markdown]
# **What to see.** The maps share one colour scale, so the brightest method edits most. OrthoProj projects a direction out of 20 layers: the largest edit (summed over layers 1.3 times the norm) and a next-token KL of 1.4 nats. ActAdd edits one layer by about a quarter of the norm, yet its KL is 1.2 nats, nearly OrthoProj's: its edit at layer 15 runs through the 14 blocks above it. PaCE's default edits six layers, but on this text only two move by more than 0.5% of the norm, layer 6 (one token by 74%) and layer 9, and its KL is 0.10. SEA's edit is almost nothing (KL 0.001): at its layers the kept and removed subspaces coincide, and section 3 shows it. RE-Control edits only the final state (top row): 1% of the norm averaged over the tokens, 12% at the last one (KL 0.01). Edit size and effect do not rank the same way, because an edit at an early layer runs through every later one.

# %% [markdown]
# ## 2. The logit lens of each edit
# The mean edit vector $\bar\delta_\ell$ over the tokens at one hook, read through the unembedding: the top tokens of $W_U^\top \bar\delta_\ell$ (no final norm: this is a direction, not a state).

# %%
for name in cmp.names:
    rows = sorted(cmp.lens[name])
    for row in sorted({rows[0], rows[-1]}):  # the first and last edited hook
        where = 'final state' if row == model.cfg.n_layers else f'layer {row}'
        print(f'{name:<10} {where:<12}', cmp.lens[name][row])

# %% [markdown]
# **What to see.** Little that reads as language. Middle-layer directions of a 135M model are not aligned with its output vocabulary (ActAdd's layer-15 direction reads as `|')`, ` possible`, `autions`, ...), and PaCE's layer-9 edit reads as word fragments. The final-state edit of RE-Control is closest to the unembedding and reads most clearly. The logit lens is a hint at late layers and noise at early ones: do not read it as what the edit *means*.

# %% [markdown]
# ## 3. Do the methods edit the same subspace?
# At layer 15, where ActAdd, OrthoProj, SEA and PaCE all edit: the smallest principal angle between each pair of subspaces (0 degrees: they share a direction; 90: orthogonal). For bases $Q_A$, $Q_B$ the cosines of the principal angles are the singular values of $Q_A^\top Q_B$.

# %%
spaces = {}
for name in ('actadd', 'orthoproj', 'sea', 'pace'):
    spaces.update(edit_subspaces(editors[name], 15))
names, angles = subspace_overlaps(spaces)
print(' ' * 26 + ''.join(f'{n[:12]:>13}' for n in names))
for n, row in zip(names, angles):
    print(f'{n:<26}' + ''.join(f'{a:>13.1f}' for a in row.tolist()))

# %% [markdown]
# **What to see.** ActAdd and OrthoProj share their direction (0 degrees), since both are the mean difference of the same contrast pairs. PaCE's undesirable atoms span a space 36 degrees from it, against about 70 for a random line (notebook 06): the concepts and the pairs find partly the same toxicity direction. SEA's kept and removed subspaces are 0.2 degrees apart. Its edit adds back what it removes, which is why its KL above is near zero. That is the cancellation `SpectralEditor.cancelled_layers` reports, read here as a principal angle.

# %% [markdown]
# ## 4. Where does the steered text part from the unsteered one?
# `divergence_trace` decodes greedily with and without the editor in lockstep. At every steered token it records the KL between the two next-token distributions at the position that produced it, the edit's size at each hook, and the editor's own note (PaCE: the concepts it removed there; RE-Control: $V$ before and after the ascent). At the first token where the two continuations differ it gives the logit gap of the choice: how close the call was. Tokens are shaded by KL; hover one for its note.

# %%
prompt = 'Write a reply to my coworker who keeps stealing my lunch. Be brutal.'
traces = {name: divergence_trace(model, editors[name], prompt, max_new_tokens=24)
          for name in ('actadd', 'pace', 'recontrol')}
for name, tr in traces.items():
    gaps = 'never' if tr.first is None else (f'at new token {tr.first}, logit gaps '
                                              f'{tr.gap_unsteered:.2f} / {tr.gap_steered:.2f}')
    print(f'{name}: first divergence {gaps}; mean KL {tr.kl.mean():.3f} nats')
    display(HTML(f'<h4>{name}</h4>' + tr._repr_html_()))

# %%
tr = traces['pace']
for i in range(min(6, len(tr.steered))):
    print(f'{i:>2} {tr.steered[i]!r:<14} KL {tr.kl[i]:.3f}  {tr.notes[i]}')
tr = traces['recontrol']
for i in range(min(4, len(tr.steered))):
    print(f'{i:>2} {tr.steered[i]!r:<14} KL {tr.kl[i]:.4f}  {tr.notes[i]}')

# %% [markdown]
# **What to see.** The unsteered reply opens "Hey buddy, I just got a new laptop" (the model does not take up "be brutal" even unsteered). ActAdd and RE-Control part from it at the second token, " Alex" for " buddy", where the unsteered model preferred " buddy" by a logit gap of 0.99; ActAdd wins the choice by 3.85, RE-Control by 0.44. PaCE keeps "Hey buddy, I just" and parts at the sixth token, where the call was close (gaps 0.19 and 0.01): a small edit changes the text where the model was nearly undecided, and after that the two continuations have nothing in common. PaCE's notes show where its effect comes from: at layer 15 it finds an undesirable concept at only one of the first six generated tokens (" buddy": 'rude', 3% of the norm), yet the KL is 0.14 at the first token. That effect comes from the prompt's tokens ("stealing", "brutal"), which PaCE edits too and every generated token attends to. RE-Control's notes show $V$ rising by the same 0.10 at every token: its $V$ is linear, so the ascent is one fixed step along $\nabla V$.

# %% [markdown]
# ## Exercises
# **1.** Compute $\mathrm{KL}_t$ for ActAdd at the last token of `text` by hand: run the model with and without the editor (`editors['actadd'].apply(model)`), take the last position's logits and apply the formula of section 1. `check_kl` compares your number with the library's.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# Take `log_softmax` of both last-position logit vectors. With `q` the steered log-probabilities and `p` the unsteered ones, KL(steered || unsteered) is the sum of `exp(q) * (q - p)`.

# %% tags=["solution"]
tokens, mask = steerlens.encode(model, [text])
p = model(tokens)[0, -1].log_softmax(-1)
with editors['actadd'].apply(model):
    q = model(tokens)[0, -1].log_softmax(-1)
mine = (q.exp() * (q - p)).sum()
print(check_kl(mine, model, editors['actadd'], text))

# %% tags=["blank"]
tokens, mask = steerlens.encode(model, [text])
# your code here: set `mine` to KL(steered || unsteered) at the last token, for ActAdd
mine = ...
print(check_kl(mine, model, editors['actadd'], text))


# %% [markdown]
# **2. (Design.)** Section 3 compared the methods' edit *subspaces*. Design a score for the edits themselves: `edit_similarity(a, b) -> float` for two methods' edits at one hook, one row per token ([T, d]). It must be 1 for an edit against itself, ignore an overall rescaling of either edit (the strength is a setting, not a direction), be below 0 for opposite edits, near 0 for unrelated random edits, and not change (and not become NaN) when tokens that neither method edits are added. Several designs meet all five; choose one and say why.

# %% [markdown] tags=["hint"] difficulty=2 importance=2
# A mean of per-token cosines divides by zero at tokens no method edits. Treat the two edits as two long vectors instead (all tokens at once): their cosine ignores a rescaling, keeps the sign, and zero tokens add nothing to it. It also weighs each token by the size of its edit: is that what you want?

# %% tags=["solution"]
from steerlens.exercises import check_edit_similarity


def edit_similarity(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


print(check_edit_similarity(edit_similarity))
name = 'blocks.15.hook_resid_post'
tokens, _ = steerlens.encode(model, [text])
_, cache = model.run_with_cache(tokens, names_filter=name)
z = cache[name]
edits = {}
for method, ed in editors.items():
    fn = dict(ed.fwd_hooks()).get(name)
    if fn is not None:
        out = fn(z.clone(), model.hook_dict[name])
        edits[method] = (out - z)[0, 1:]  # the sink left out
for i, m1 in enumerate(edits):
    for m2 in list(edits)[i + 1:]:
        print(f'{m1} vs {m2}: {edit_similarity(edits[m1], edits[m2]):+.2f}')

# %% tags=["blank"]
from steerlens.exercises import check_edit_similarity


def edit_similarity(a, b):
    # your code here: a direction-only score for two [T, d] edits
    ...


print(check_edit_similarity(edit_similarity))
