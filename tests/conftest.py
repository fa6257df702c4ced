"""Fixtures: tiny random models for unit tests; the real default model (session-scoped) for integration."""

import pytest
import torch

from steerlens import load_model, tiny_model


@pytest.fixture
def tiny():
    return tiny_model(n_layers=3, d_model=32, d_vocab=101)


@pytest.fixture(scope="session")
def model():
    torch.manual_seed(0)
    return load_model(verbose=False)


@pytest.fixture(scope="session")
def bridge():
    return load_model(backend="bridge", verbose=False)


@pytest.fixture(scope="session")
def tiny_chat():
    """A tiny random model with the default model's real tokenizer and vocabulary size: runs every text code
    path (chat template, generation, the demo) in seconds. Needs the default model's cached tokenizer."""
    from transformers import AutoTokenizer

    from steerlens.models import _attach_tokenizer, _hf_cache_path, load_hf_model

    if not (_hf_cache_path() / "tokenizer.json").is_file():
        load_hf_model(verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(_hf_cache_path())
    model = tiny_model(n_layers=3, d_model=32, d_vocab=len(tokenizer))
    _attach_tokenizer(model, tokenizer)
    return model
