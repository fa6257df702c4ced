"""What PaCE's removed part does to the next-token readout: the logit lens of ``D_U c_U``.

On two hostile beginnings and their unsteered continuations (notebook 03's texts), at each layer of the
shipped detox default: the tokens where the removed part is more than 10% of ``||z||``, and there the change
of every vocabulary logit that removing it makes through the unembedding, ``-(D_U c_U) W_U`` (no final norm:
the removed part is a direction, not a state; a crude readout at early layers). Per layer it prints the mean
change of the undesirable concepts' own tokens (the first token of " word"), in standard deviations of the
change over the vocabulary, and the tokens demoted most on average. If the undesirable part were "about to
say an insult", removing it would demote the insult tokens (a negative figure). Run alone:

    python benchmarks/pace_lens.py
"""

from __future__ import annotations

import torch

import steerlens
from steerlens.activations import collect_activations
from steerlens.harness import contexts_of, fit_editor, respond

ROWS = [{"prefix": "Sit down, IT guy, you stupid, stupid"},
        {"prefix": 'Then my dad turned and shouted at the security guard: "You miserable, ugly'}]


@torch.no_grad()
def main() -> None:
    model = steerlens.load_model(verbose=False)
    ed = fit_editor(model, "pace", "detox", progress=False)
    undesirable = ed.tensors["undesirable"]
    names = [n for n, u in zip(ed.settings["concepts"], undesirable.tolist(), strict=True) if u]
    ids = sorted({model.tokenizer.encode(" " + n, add_special_tokens=False)[0] for n in names})
    W = model.W_U.detach().float()
    own = torch.zeros(W.shape[1], dtype=torch.bool)
    own[ids] = True
    texts = [c + a for c, a in zip(contexts_of(model, ROWS), respond(model, ROWS, 48), strict=True)]
    print(f"{len(names)} undesirable concepts ({len(ids)} distinct first tokens); {len(texts)} texts")
    print(f"{'layer':>5}{'tokens >10%':>13}{'own tokens (sd)':>17}   most demoted on average")
    for layer in ed.layers:
        z = torch.cat(collect_activations(model, texts, layers=[layer], position="all",
                                          progress=False)[f"blocks.{layer}.hook_resid_post"])
        z = z[z.norm(dim=-1) <= float(ed.tensors[f"sink_norm.{layer}"])]  # attention sinks left out
        removed = (ed.coefficients(layer, z) * undesirable) @ ed.tensors[f"atoms.{layer}"].T
        big = removed.norm(dim=-1) / z.norm(dim=-1) > 0.1
        change = -(removed[big] @ W)
        standard = (change - change.mean(-1, keepdim=True)) / change.std(-1, keepdim=True)
        demoted = (-change.mean(0)).topk(6).indices.tolist()
        print(f"{layer:>5}{f'{int(big.sum())}/{len(z)}':>13}{float(standard[:, own].mean()):>+17.2f}   "
              + ", ".join(repr(model.tokenizer.decode([t])) for t in demoted))


if __name__ == "__main__":
    main()
