# %% [markdown]
# # 07. Pitfalls: the reference implementations' bugs, reproduced and measured
#
# **Learning objectives**
# - Check any hand-written hook with `check_hook`: cached against uncached generation, alone against batched.
# - See what four bugs of the methods' reference code do on a real model, with a number for each: SEA's per-coordinate rescale under the KV cache, a projection learned at one hook and applied at another, RE-Control's undetached TD target and terminal reward at the first position, and editing the attention sink.
# - Write the fixed versions and have them checked.
#
# **Time**: under a minute on 2 CPU cores once the model is cached (38 s measured warm, 2026-12-06). A cold first run (empty cache) also converts the model (about 30 s) and loads the shipped SEA editor.
#
# The bugs are listed in `docs/methods.md` (reference code: yfqiu-nlp/sea-llm, Lingkai-Kong/RE-Control). steerlens implements the fixed versions; here we write the buggy ones as plain hooks.

# %%
import matplotlib.pyplot as plt
import torch

import steerlens
from steerlens.analysis import check_hook, kl_divergence
from steerlens.data import contrast_pairs
from steerlens.exercises import check_per_token_rescale, check_td_targets
from steerlens.harness import fit_editor
from steerlens.methods import ActAdd
from steerlens.methods.recontrol import td_targets

model = steerlens.load_model()
sea = fit_editor(model, 'sea', 'truthfulqa', progress=False)  # the shipped TruthfulQA editor
layer = 29  # at its other 19 layers this editor's kept and removed subspaces coincide: no edit
name = f'blocks.{layer}.hook_resid_post'
correct = dict(sea.fwd_hooks())[name]  # steerlens' SEA edit at one layer (per-token rescale)


# %% [markdown]
# ## 1. SEA's per-coordinate rescale under the KV cache
# SEA combines the kept and removed projections and rescales the result to the norm of the input (paper Eq. 4). steerlens rescales each token's vector: $z' \leftarrow z' \, \lVert z \rVert / \lVert z' \rVert$. The reference code rescales each *coordinate* $j$ by its norm over all $T$ positions:
#
# $$z'_{t,j} \leftarrow z'_{t,j} \, \frac{\lVert z_{:,j} \rVert}{\lVert z'_{:,j} \rVert}.$$
#
# A token's output then depends on every other position, later ones included (non-causal), and with the KV cache, where the hook sees one position, the factor is $|z_{t,j}| / |z'_{t,j}|$: every coordinate keeps its old magnitude and only its sign can change.

# %%
def per_coordinate(fn):
    """The reference code's rescale around an edit fn: per coordinate, over all positions."""
    def hook(act, hook):
        edited = fn(act, hook)
        return edited * act.norm(dim=1, keepdim=True) / edited.norm(dim=1, keepdim=True).clamp_min(1e-6)
    return hook

text = steerlens.format_chat(model.tokenizer, 'What happens if you crack your knuckles a lot?')
tokens, _ = steerlens.encode(model, [text])
_, cache = model.run_with_cache(tokens, names_filter=name)
z = cache[name]
right = correct(z, None)[0, -1]                       # steerlens: per token
full = per_coordinate(correct)(z, None)[0, -1]        # uncached: the hook sees every position
alone = per_coordinate(correct)(z[:, -1:], None)[0, -1]  # KV-cached decoding: one position
edit = (right - z[0, -1]).norm()
print(f'the correct edit at the last token: {edit / z[0, -1].norm():.4f} of |z|')
print(f'per-coordinate, uncached: differs from it by {(full - right).norm() / edit:.2f} of the edit')
print(f'per-coordinate, cached:   keeps {(alone - z[0, -1]).norm() / edit:.2f} of the edit')
right_check = check_hook(model, sea.fwd_hooks())
buggy_check = check_hook(model, [(n, per_coordinate(fn)) for n, fn in sea.fwd_hooks()])
print(right_check); print(buggy_check)
assert right_check.ok and not buggy_check.ok

# %% [markdown]
# **What to see.** At the last token of this question, layer 29, the correct edit moves the state by 28% of its norm. The per-coordinate rescale gives a different answer depending on what the hook sees: uncached (every position in view) it is off by 0.22 of the edit, because every coordinate's factor is shared with all other positions, the attention sink included; cached (one position in view) only 0.52 of the edit's size is left, because each coordinate keeps its old magnitude and can only change sign. Generation then depends on whether the cache is on: `check_hook` passes steerlens' hooks and fails the per-coordinate ones on all three prompts, from the second to the fifth new token.

# %% [markdown]
# ## 2. A projection learned at one hook, applied at another
# SEA's bases are learned on the residual stream (`hook_resid_post`). The reference code applies them to the MLP's output (`hook_mlp_out`), a different space with a different scale. The same function at the wrong hook:

# %%
mlp = f'blocks.{layer}.hook_mlp_out'
_, cache = model.run_with_cache(tokens, names_filter=lambda n: n in (name, mlp))
for hook in (name, mlp):
    x = cache[hook][0, 1:]  # the sink left out
    y = correct(cache[hook][:, 1:], None)[0]
    print(f'{hook:<26} |x| {x.norm(dim=-1).mean():7.2f}   edit {((y - x).norm(dim=-1) / x.norm(dim=-1)).mean():.3f} of |x|')
base = model(tokens)[0]
with model.hooks(fwd_hooks=sea.fwd_hooks()):
    right_logits = model(tokens)[0]
moved = [(n.replace('hook_resid_post', 'hook_mlp_out'), fn) for n, fn in sea.fwd_hooks()]
with model.hooks(fwd_hooks=moved):
    wrong_logits = model(tokens)[0]
print(f'mean next-token KL from unsteered: at the right hooks {kl_divergence(right_logits, base)[1:].mean():.4f}, '
      f'at hook_mlp_out {kl_divergence(wrong_logits, base)[1:].mean():.4f} nats')
print(f'mean KL between the two edits: {kl_divergence(wrong_logits, right_logits)[1:].mean():.4f} nats')
top = lambda logits: model.tokenizer.decode(logits[-1].argmax())
print(f'next token after the question: unsteered {top(base)!r}, SEA {top(right_logits)!r}, '
      f'SEA at hook_mlp_out {top(wrong_logits)!r}')

# %% [markdown]
# **What to see.** The bases were learned on the residual stream, but applied to the MLP output they still change it (by 21% of its norm here, against 18% of the residual), because a projection applies to any vector. Nothing fails: the shapes match. The edit is simply another edit: its next-token KL from the unsteered model (0.078 nats) is smaller than the correct edit's (0.124), and 0.063 nats from the correct edit's own distribution. On this question both put "The" first where the unsteered model says "Cra", so a single greedy answer would not reveal the bug. Only the measurement on the right space (or a check that the hook name matches the one the bases were fitted at, which steerlens' editors carry) does.

# %% [markdown]
# ## 3. RE-Control's value training: an undetached target and the reward at the first position
# The value function is trained by undiscounted TD(0) with the reward only at the end (paper Eq. 6):
#
# $$\mathcal{L} = \sum_t \big(V(s_t) - y_t\big)^2, \quad y_t = \operatorname{sg}[V(s_{t+1})] \ (t < T), \quad y_T = r.$$
#
# The reference code (a) does not stop the gradient through $y_t$ and (b) attaches $r$ to the first position instead of the last. To see what each does we use a toy problem whose answer we know: episodes of 12 states in $\mathbb{R}^{16}$ that reveal the final reward $r$ more and more clearly, $s_t = (t/11)\,r\,w + \epsilon_t$, and a linear $V$ trained by each rule with Adam. A good $V$ predicts $r$ from late states, which is where RE-Control uses it (at every generated token).

# %%
g = torch.Generator().manual_seed(0)
n, T, d = 512, 12, 16
w = torch.randn(d, generator=g)
def episodes(n):
    r = torch.randn(n, generator=g)
    s = (torch.arange(T) / (T - 1))[None, :, None] * r[:, None, None] * w + 0.5 * torch.randn(n, T, d, generator=g)
    return s, r
(train_s, train_r), (test_s, test_r) = episodes(n), episodes(n)
mask = torch.ones(n, T, dtype=torch.bool)

def undetached(values, mask, rewards):  # bug (a): the target keeps its gradient
    nxt = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    return torch.cat([nxt[:, :-1], rewards[:, None]], dim=1)

def reward_first(values, mask, rewards):  # bug (b): r at the first position, 0 after the last
    nxt = torch.cat([values[:, 1:].detach(), torch.zeros_like(values[:, :1])], dim=1)
    return torch.cat([rewards[:, None], nxt[:, 1:]], dim=1)

def train(targets, steps=400):
    torch.manual_seed(0)
    vf = torch.nn.Linear(d, 1)
    opt = torch.optim.Adam(vf.parameters(), lr=1e-2)
    for _ in range(steps):
        v = vf(train_s).squeeze(-1)
        loss = ((v - targets(v, mask, train_r)) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        v = vf(test_s).squeeze(-1)
    corr = torch.stack([torch.corrcoef(torch.stack([v[:, t], test_r]))[0, 1] for t in range(T)])
    slope = float((v[:, -1] * (test_r - test_r.mean())).sum() / ((test_r - test_r.mean()) ** 2).sum())
    return corr, slope  # slope of V(s_11) on r: 1 when V predicts the reward on its own scale

curves = {'steerlens (detached, r at the end)': train(td_targets),
          '(a) undetached target': train(undetached), '(b) r at the first position': train(reward_first)}
fig, ax = plt.subplots(figsize=(6, 3.5))
for label, (c, slope) in curves.items():
    ax.plot(range(T), c, marker='o', label=label)
    print(f'{label:<36} corr(V(s_t), r) at t=0: {c[0]:+.2f}, t=6: {c[6]:+.2f}, t=11: {c[-1]:+.2f};'
          f' slope of V(s_11) on r {slope:+.2f}')
ax.set_xlabel('step t'); ax.set_ylabel('held-out corr(V(s_t), r)'); ax.legend(fontsize=8); plt.show()
good, undetached, first = (curves[k] for k in curves)
assert good[0][-1] > 0.9 and abs(first[0][-1]) < 0.3 and undetached[1] < 0.8 * good[1]

# %% [markdown]
# **What to see.** With the reward at the first position, $V$ never learns to predict $r$ from the states where it is used: the held-out correlation stays near 0 (-0.03, -0.12 and -0.16 at steps 0, 6 and 11), because the reward enters only at $t = 0$, where the state says little about it, and the later targets chain back to the 0 after the last step. A controller climbing that $V$ pushes in a direction that has nothing to do with the reward. The undetached target gives the same correlations here, but a $V$ at about half the scale: the slope of $V(s_{11})$ on $r$ is 0.65 against 1.28 detached (a linear $V$ cannot give every step the same value, since its input grows with $t$, so even the correct rule overshoots at the end). The gradient through the target pulls $V(s_{t+1})$ back towards $V(s_t)$, so the reward is passed on only in part. Correlation hides this; the paper's raw step $\alpha \nabla V$ does not: a $V$ at half the scale moves the state half as far.

# %% [markdown]
# ## 4. Editing the attention sink
# The first token of SmolLM2 carries a massive activation (about 100x the others' norm): every later position attends to it. steerlens editors leave positions whose norm exceeds the fitted `sink_norm` alone. Does that matter? Two kinds of hand-written hook, each with and without the sink: ActAdd's fixed vector (`alpha * vector`, exactly what ActAdd's own hook adds), and an edit sized relative to each state, 10% of its norm along the same direction (as RE-Control's `relative=True` control and any "x% of the norm" edit are).

# %% [markdown] tags=["predict"]
# Which of the two will care whether the sink is edited?

# %% [markdown] tags=["answer"]
# The edit sized relative to each state. 10% of the sink's norm (about 25,000) is more than any other state's whole norm: the mean KL grows from 0.06 to 0.99 nats. The fixed vector moves the sink by 0.2% of its norm: 0.50 against 0.49 nats.

# %%
pos, neg = contrast_pairs('sentiment')
act = ActAdd.fit(model, pos, neg, layers=[15], alpha=0.3, progress=False)
vec = act.settings['alpha'] * act.tensors['vector.15']  # what ActAdd's own hook adds
unit = vec / vec.norm()
name15 = 'blocks.15.hook_resid_post'
prompt = 'Tell me about your commute.'
tokens, _ = steerlens.encode(model, [steerlens.format_chat(model.tokenizer, prompt)])
_, cache = model.run_with_cache(tokens, names_filter=name15)
norms = cache[name15][0].norm(dim=-1)
sink_cut = 10 * float(norms[1:].median())  # the sink is the state above 10x the median norm
print(f'|sink| {norms[0]:.0f}, median |z| of the others {norms[1:].median():.0f}, '
      f'|alpha * vector| {vec.norm():.0f}')

def make_hook(relative, sink):
    def hook(act, hook):
        d = (0.1 * act.norm(dim=-1, keepdim=True) if relative else vec.norm()) * unit.to(act.dtype)
        if not sink:
            d = torch.where(act.norm(dim=-1, keepdim=True) > sink_cut, torch.zeros_like(d), d)
        return act + d
    return hook

base = model(tokens)[0]
kls = {}
for relative in (False, True):
    for sink in (False, True):
        label = f"{'10% of |z|' if relative else 'fixed vector'}, {'sink edited too' if sink else 'sink left alone'}"
        with model.hooks(fwd_hooks=[(name15, make_hook(relative, sink))]):
            kl = float(kl_divergence(model(tokens)[0], base)[1:].mean())
            out = steerlens.generate(model, prompt, max_new_tokens=25)
        print(f'{label:<32} mean KL {kl:.3f} nats  {out[0]!r}')
        kls[relative, sink] = kl
print('unsteered:', repr(steerlens.generate(model, prompt, max_new_tokens=25)[0]))
assert kls[False, True] < 1.2 * kls[False, False]  # a fixed vector: the sink barely matters
assert kls[True, True] > 5 * kls[True, False]      # a relative edit: the sink dominates


# %% [markdown]
# **What to see.** The sink's norm is about 25,000, the other states' about 170, and ActAdd's vector 46. Added as a fixed vector, it moves the sink by 0.2% of its norm, so editing the sink too changes almost nothing: 0.50 against 0.49 nats of mean next-token KL, the same fluent, upbeat reply. (An earlier version of this lesson compared the sink-safe hook with a hand-written one 3.3 times as strong and blamed the sink for the difference: always compare edits of the same size.) Sized relative to each state, the same direction moves the sink by 10% of 25,000, more than the norm of every other state: the mean KL grows from 0.06 to 0.99 nats (asserted: more than 5x), and every later token feels it, since all of them attend to the sink. `check_hook` would pass both hooks: they are consistent under the cache and in a batch. The sink guard matters for edits that scale with the state (RE-Control's relative control, norm-preserving projections such as SEA's Eq. 4), not for a small fixed vector.

# %% [markdown]
# ## Exercises
# **1.** Fix section 1's rescale: given the input `z` and the edited `edited`, both [batch, pos, d], rescale each token's vector to the norm of its input.

# %% [markdown] tags=["hint"] difficulty=1 importance=2
# Take the norm over the last dimension (the model's width) with `keepdim=True`, so each token gets its own factor. A norm over the positions, one factor per coordinate, is the reference code's bug of section 1.

# %% tags=["solution"]
def rescale(z, edited):
    return edited * z.norm(dim=-1, keepdim=True) / edited.norm(dim=-1, keepdim=True)

print(check_per_token_rescale(rescale))


# %% tags=["blank"]
def rescale(z, edited):
    # your code here
    ...

print(check_per_token_rescale(rescale))


# %% [markdown]
# **2.** Write the TD(0) targets of section 3 the right way: `values` [batch, T], `mask` [batch, T] (True on real steps, episodes of different lengths), `rewards` [batch]; the reward at each episode's last real step, 0 on padding, and no gradient through the targets.

# %% [markdown] tags=["hint"] difficulty=3 importance=3
# Shift `values` one step left to get each step's next value, and shift `mask` the same way to know where a next real step exists. The last real step of each episode is `mask.sum(1) - 1`: put the reward there. `.detach()` the values, and multiply by `mask` so padding gets 0.

# %% tags=["solution"]
def my_td_targets(values, mask, rewards):
    values = values.detach()
    nxt = torch.zeros_like(values)
    nxt[:, :-1] = values[:, 1:]
    has_next = torch.zeros_like(mask)
    has_next[:, :-1] = mask[:, 1:]
    target = torch.where(has_next, nxt, torch.zeros_like(nxt))
    last = mask.sum(1) - 1
    target[torch.arange(len(last)), last] = rewards
    return target * mask

print(check_td_targets(my_td_targets))


# %% tags=["blank"]
def my_td_targets(values, mask, rewards):
    # your code here
    ...

print(check_td_targets(my_td_targets))


# %% [markdown]
# **3. (Design.)** Section 3's first bug, the undetached TD target, is invisible in the targets' values: detached or not, they are the same numbers. Design a test that catches it: `leaks(td_fn) -> bool`, True when the loss's gradient can flow back into `values` through the targets that `td_fn(values, mask, rewards)` returns. The check runs it on four target functions whose answer it knows.

# %% [markdown] tags=["hint"] difficulty=1 importance=3
# Values are numbers; whether they carry a graph is a property autograd can tell you. Make `values` that require grad, compute the targets, and look at their `requires_grad` (or at the gradient of their sum with respect to `values`). Comparing target values cannot work.

# %% tags=["solution"]
from steerlens.exercises import check_leak_test


def leaks(td_fn):
    values = torch.randn(4, 6, requires_grad=True)
    mask = torch.ones(4, 6, dtype=torch.bool)
    return td_fn(values, mask, torch.randn(4)).requires_grad


print(check_leak_test(leaks))

# %% tags=["blank"]
from steerlens.exercises import check_leak_test


def leaks(td_fn):
    # your code here: True when td_fn's targets let a gradient through to `values`
    ...


print(check_leak_test(leaks))
