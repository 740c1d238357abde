"""Shared fixtures: small synthetic twins, generated once per test session."""

import os

import pytest

# Every process a test starts inherits these: DVC sends no usage analytics, and neither DVC nor
# DVCLive talks to DVC Studio, even on a machine whose DVC config holds a Studio token.
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["DVC_STUDIO_OFFLINE"] = "1"

from movierec.data import synthetic


@pytest.fixture(scope="session")
def twin_200k() -> synthetic.Twin:
    return synthetic.generate(200_000, seed=7)


@pytest.fixture(scope="session")
def twin_30k() -> synthetic.Twin:
    return synthetic.generate(30_000, seed=3)
