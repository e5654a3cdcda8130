import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
# trained checkpoints and the run history of the tests never go to the user's cache
import tempfile  # noqa: E402

os.environ.setdefault("LLM_EXPLORER_RUNS", tempfile.mkdtemp(prefix="llm-explorer-test-runs-"))

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # lets tests import the shared `browser` helpers


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub, and an empty Hugging Face cache (whatever the machine has cached)."""
    import huggingface_hub.constants as hf_constants

    from gpt_core import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "empty-hf-cache"
    empty.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(empty))
    return empty


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads (and each torchrun process runs on one): torch on one thread for a
    module's tests (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
