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


@pytest.fixture(scope="session", autouse=True)
def _teacher_checkpoints(tmp_path_factory):
    """Distillation teachers (tests.helpers.learners.teacher_checkpoint) go to this session's
    temporary folder, which pytest cleans up, and subprocesses (the DDP script) read them there."""
    os.environ["LIT_META_TEST_TEACHERS"] = str(tmp_path_factory.mktemp("teachers"))
