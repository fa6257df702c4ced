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
