import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
# trained checkpoints and the run history of the tests never go to the user's cache
import tempfile  # noqa: E402

os.environ.setdefault("LLM_EXPLORER_RUNS", tempfile.mkdtemp(prefix="llm-explorer-test-runs-"))

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # lets tests import the shared `browser` helpers
