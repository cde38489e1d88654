import os

import pytest
import torch

# Flower: no telemetry, no update check, no dependency installation at run time (tests and docs alike).
os.environ.update(
    FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1"
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
