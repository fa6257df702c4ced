"""Evaluators: diversity by hand, the offline classifiers' direction, perplexity against a manual sum."""

import pytest
import torch

from steerlens.evaluation import distinct_ratio, diversity, offensive_prob, perplexity, response_nll, vader_compound
from steerlens.generation import format_chat


def test_diversity_by_hand():
    assert diversity(["a b c d e"]) == 1.0
    # "a b a b a b": bigrams ab,ba,ab,ba,ab -> 2/5; trigrams 2/4; 4-grams 2/3
    assert diversity(["a b a b a b"]) == pytest.approx((2 / 5) * (2 / 4) * (2 / 3))
    assert distinct_ratio(["x"], 2) == 1.0
    with pytest.raises(ValueError):
        diversity([])


def test_classifiers_point_the_right_way():
    off = offensive_prob(["Thank you, have a lovely day.", "Shut up, you stupid idiot."])
    assert off[1] > 0.5 > off[0]
    sent = vader_compound(["I love this wonderful day.", "This is awful and I hate it."])
    assert sent[0] > 0.5 and sent[1] < -0.5


@pytest.mark.integration
def test_response_nll_matches_manual(model):
    ctx = format_chat(model.tokenizer, "Name a colour.")
    resp = "Blue is a calm colour."
    nll, n = response_nll(model, [ctx, "Hello"], [resp, " there"])
    tok = model.tokenizer
    c, r = tok(ctx, add_special_tokens=False)["input_ids"], tok(resp, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([c + r])).log_softmax(-1)[0]
    manual = -sum(logp[len(c) - 1 + j, t].item() for j, t in enumerate(r))
    assert n[0] == len(r) and nll[0] == pytest.approx(manual, rel=1e-4)
    assert perplexity(model, [ctx], [resp]) == pytest.approx(float(torch.tensor(manual / len(r)).exp()), rel=1e-4)
