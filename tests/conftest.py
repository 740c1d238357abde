"""Shared fixtures: small synthetic twins, generated once per test session."""

import pytest

from movierec import synthetic


@pytest.fixture(scope="session")
def twin_200k() -> synthetic.Twin:
    return synthetic.generate(200_000, seed=7)


@pytest.fixture(scope="session")
def twin_30k() -> synthetic.Twin:
    return synthetic.generate(30_000, seed=3)
