"""Fixtures of the federated tests."""

from __future__ import annotations

import pytest

from tests.helpers.fabricate import minimal_omniglot


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """Fabricated Omniglot "minimal" zips: 2 training and 2 test alphabets of 6 characters."""
    return minimal_omniglot(str(tmp_path_factory.mktemp("omniglot")), characters=6)
