# %% [markdown]
# # 06. Geometry and controls: do the methods edit the same subspace, and does the direction matter?
#
# **Learning objectives**
# - Compare the subspaces that ActAdd, SEA, PaCE and RE-Control edit, layer by layer, with principal angles, and read them against the angle a *random* direction would give.
# - Run a method next to a control edit of the same size in a random direction, and tell an effect of the learned direction from an effect of perturbing the model at all.
# - Read a dose-response frontier (metric against perplexity) with paired bootstrap intervals.
#
# **Time**: about a minute on 2 CPU cores once the model is cached (60 s measured warm, 2026-12-06). A cold first run (empty cache) also converts the model (about 30 s) and builds the editors from the shipped files.
#
# References: principal angles (Björck and Golub 1973); ActAdd (Turner et al. 2023, Eq. 1); SEA (Qiu et al. 2024, Sec. 3, Eq. 1-4); PaCE (Luo et al. 2024, Sec. 3.3); RE-Control (Kong et al. 2024, Sec. 4.2).

# %%
import matplotlib.pyplot as plt
import torch

import steerlens
from steerlens import plotting
from steerlens.analysis import geometry_table, mean_value_gradient, principal_angles
from steerlens.data import contrast_pairs, data_dir, read_jsonl
from steerlens.exercises import check_equal_norm_control, check_principal_angle
from steerlens.harness import fit_editor
from steerlens.methods import ActAdd
from steerlens.sweep import format_table, run_sweep

model = steerlens.load_model()
pos, neg = contrast_pairs('toxicity')
# ActAdd's direction at every layer from 6 on (one pass over the pairs), to compare with each method
actadd = ActAdd.fit(model, pos, neg, layers=list(range(6, 30)), alpha=0.3, progress=False)
sea = fit_editor(model, 'sea', 'detox', progress=False)
pace = fit_editor(model, 'pace', 'detox', progress=False)
recontrol = fit_editor(model, 'recontrol', 'detox', progress=False)
print('SEA kept k+ / removed k- per layer:', sea.kept_ranks())
print('PaCE layers', pace.layers, 'with', int(pace.tensors['undesirable'].sum()), 'undesirable atoms')

# %% [markdown]
# ## 1. Principal angles, and what chance gives
# For subspaces $A$ and $B$ with orthonormal bases $Q_A \in \mathbb{R}^{d\times p}$, $Q_B \in \mathbb{R}^{d\times q}$, the cosines of the principal angles are the singular values of $Q_A^\top Q_B$:
#
# $$\cos\theta_i = \sigma_i(Q_A^\top Q_B), \qquad 0^\circ \le \theta_1 \le \dots \le 90^\circ.$$
#
# We report the smallest, $\theta_1$: $0^\circ$ means the two share a direction. A large subspace is close to *every* direction: a random unit vector $r$ and a random $k$-dimensional subspace of $\mathbb{R}^d$ have $\cos^2\theta_1 \approx k/d$. So each angle below is read against a random line's angle to the same subspace (the `random` columns).

# %%
d = model.cfg.d_model
texts = ['You are a complete idiot and', 'Thanks so much for your help with the move.',
         'Shut up, nobody asked you.', 'The weather is lovely today.']
grad_v = mean_value_gradient(model, recontrol, texts)  # RE-Control edits the final state
g = torch.Generator().manual_seed(0)
extra = {la: {'random line': torch.randn(d, 1, generator=g)} for la in range(6, 30)}
extra[29]['recontrol: mean grad V'] = grad_v
table = geometry_table([actadd, sea, pace], extra=extra)
plotting.geometry_plot(table); plt.show()


# %%
def column(pair):
    return table.angles[:, table.pairs.index(pair)]
rows = {la: i for i, la in enumerate(table.layers)}
for la in (15, 21, 29):
    i = rows[la]
    print(f'layer {la}: ActAdd vs SEA removed {column("actadd: direction vs sea: removed (-)")[i]:.1f}'
          f' (random line {column("sea: removed (-) vs random line")[i]:.1f});'
          f' SEA kept vs removed {column("sea: kept (+) vs sea: removed (-)")[i]:.1f}')
for la in (9, 15, 21):
    i = rows[la]
    print(f'layer {la}: ActAdd vs PaCE atoms {column("actadd: direction vs pace: undesirable atoms")[i]:.1f}'
          f' (random line {column("pace: undesirable atoms vs random line")[i]:.1f})')
i = rows[29]
print(f'layer 29: ActAdd vs mean grad V {column("actadd: direction vs recontrol: mean grad V")[i]:.1f}'
      f' (random line vs ActAdd {column("actadd: direction vs random line")[i]:.1f})')
# the claims below, checked on every run
sea_rows = [rows[la] for la in sea.layers]
assert column('sea: kept (+) vs sea: removed (-)')[sea_rows].max() < 2
pace_rows = [rows[la] for la in pace.layers]
assert (column('actadd: direction vs pace: undesirable atoms')[pace_rows]
        < column('pace: undesirable atoms vs random line')[pace_rows] - 20).all()

# %% [markdown]
# **What to see.** The model's width is $d = 576$, so a random line lies about 88 degrees from another line and about 68 degrees from the 77-atom span of PaCE's undesirable concepts ($\cos^2\theta \approx 77/576$): the `random line` columns show both. Against that:
#
# - **ActAdd and PaCE find the same toxicity direction**, partly: 23 degrees at layer 6, widening to 40 at layer 21, where a random line gets 68-71. The contrast pairs' mean difference lies close to the span of the toxic concepts, most closely early.
# - **SEA's edit cancels at every layer.** With K = 0.99 on the detox demonstrations it keeps one direction and removes one ($k_+ = k_- = 1$ at all 15 layers), and the two are 0-1 degrees apart: what it removes it adds back. That is why its KL in notebook 05 was 0.001 nats. Its direction is not ActAdd's either: 79-86 degrees at the layers printed, about as far as a random line.
# - **RE-Control's ascent direction** (mean $\nabla V$ at the final state) is 68 degrees from ActAdd's layer-29 direction, against 88 for a random line: it shares part of that direction ($\cos 68^\circ \approx 0.37$) and points elsewhere for the rest.

# %% [markdown]
# ## 2. A control of equal size: does the direction matter?
# An edit moves the model. Any large enough move changes the text, and a metric can move with it (a broken model is rarely toxic). The control: wherever the method changes an activation by $\delta_{\ell,t}$, add instead
#
# $$\tilde\delta_{\ell,t} = \lVert \delta_{\ell,t} \rVert \, r_\ell,$$
#
# with $r_\ell$ a fixed random unit vector per hook (`editing.RandomDirectionControl`): the same layers, tokens and size, no learned direction. `run_sweep(..., control=True)` (the CLI's `steerlens sweep --control`) scores both against the unsteered model on the same prompts, with paired bootstrap intervals. Here: ActAdd for sentiment at two strengths on 16 prompts of the shipped sentiment evaluation set (VADER compound, higher is more positive).

# %% [markdown] tags=["predict"]
# Replace ActAdd's direction by a random one, with the same norm at every layer and token. Will VADER rise as much as under ActAdd, rise less, stay, or fall?

# %% [markdown] tags=["answer"]
# It does not rise: the random direction gives -0.26 [-0.50, +0.01] at 1.05x perplexity, where ActAdd gives +0.47 [+0.25, +0.81] at 1.15x. The effect belongs to the direction, not to the size of the push.

# %%
rows = read_jsonl(data_dir() / 'sentiment' / 'eval.jsonl')[::2][:16]
result = run_sweep(model, 'actadd', 'sentiment', rows, 'alpha', [0.15, 0.3], max_new_tokens=32,
                   progress=False, control=True)
print(format_table(result))
plotting.sweep_frontier(result); plt.show()
low = result['rows'][0]
assert low['change_low'] > 0 and low['control']['change'] < low['change_low']  # the claim below


# %% [markdown]
# **What to see.** On these 16 prompts (unsteered VADER 0.36), ActAdd at alpha 0.15 raises VADER by +0.47 [+0.25, +0.81] at 1.15x perplexity. Its random-direction control, the same size at every layer and token, moves it by -0.26 [-0.50, +0.01] at 1.05x: the effect belongs to the direction, not to the size of the push. Doubling alpha to 0.3 does not raise VADER further (+0.37 [+0.13, +0.73]) but costs 1.57x perplexity, and its control costs about as much (1.53x) with no gain in sentiment (-0.05 [-0.40, +0.28]): past 0.15 the extra strength breaks more than it steers. The intervals are wide at 16 prompts: run `steerlens sweep --control` on a larger set before trusting a difference. The time-ratio column is noise at this size (the unsteered run comes first and warms up).

# %% [markdown]
# ## Exercises
# **1.** Write the principal angle between the lines spanned by two vectors `a` and `b` (degrees). Careful: a line has no sign.

# %% [markdown] tags=["hint"] difficulty=1 importance=2
# A line has no sign, so use the absolute value of the cosine. Clamp it to at most 1 before `arccos` (rounding can push it just over), then convert to degrees.

# %% tags=["solution"]
def angle(a, b):
    cos = (a @ b).abs() / (a.norm() * b.norm())
    return torch.rad2deg(torch.arccos(cos.clamp(max=1.0)))

print(check_principal_angle(angle))


# %% tags=["blank"]
def angle(a, b):
    # your code here
    ...

print(check_principal_angle(angle))


# %% [markdown]
# **2.** Write the equal-size control of section 2 for one hook: given the method's edits `delta` [tokens, d] and a unit vector `r` [d], return the control's edits.

# %% [markdown] tags=["hint"] difficulty=1 importance=3
# Each token's control has the length of that token's edit and the fixed direction `r`: a per-token norm (`keepdim=True`) times `r`.

# %% tags=["solution"]
def control(delta, r):
    return delta.norm(dim=-1, keepdim=True) * r

print(check_equal_norm_control(control))


# %% tags=["blank"]
def control(delta, r):
    # your code here
    ...

print(check_equal_norm_control(control))


# %% [markdown]
# **3. (Design.)** Section 1 read each angle against one random line. One draw is a noisy chance level. Design the chance level properly: `chance_angle(d, k, n_samples, generator) -> float`, the mean smallest principal angle (degrees) between two independent, uniformly random $k$-dimensional subspaces of $\mathbb{R}^d$, estimated from `n_samples` draws. The check compares it with its own estimate at $(d, k) = (16, 1), (576, 1), (64, 4)$.

# %% [markdown] tags=["hint"] difficulty=2 importance=2
# A uniformly random subspace is the span of a $d \times k$ matrix of independent standard normal entries (`torch.randn`); uniform entries in [0, 1) all lean toward the all-ones direction and give angles far too small. `principal_angles(a, b)` (imported in this notebook's first cell) returns the angles, smallest first, for bases as columns.

# %% tags=["solution"]
from steerlens.exercises import check_chance_angle


def chance_angle(d, k, n_samples, generator):
    draws = [principal_angles(torch.randn(d, k, generator=generator), torch.randn(d, k, generator=generator))[0]
             for _ in range(n_samples)]
    return float(torch.stack(draws).mean())


print(check_chance_angle(chance_angle))
print(f'chance for two lines in this model (d = {d}): {chance_angle(d, 1, 500, torch.Generator().manual_seed(1)):.1f} degrees')

# %% tags=["blank"]
from steerlens.exercises import check_chance_angle


def chance_angle(d, k, n_samples, generator):
    # your code here: the mean smallest principal angle between two random k-dim subspaces of R^d, in degrees
    ...


print(check_chance_angle(chance_angle))
