"""Two students' first pages and the preload thread import transformers' names at once: the app resolves them
first, under one import lock, so none of them fails (without that, 5 runs in 6 failed on this 2-core machine)."""
import subprocess
import sys

RACE = """
import threading
import explorer.ui.model_store  # what Home.py imports before the preload thread starts
errors = []
def load():
    try:
        from transformers import AutoModelForCausalLM  # noqa
        import transformers.models.gemma3.modeling_gemma3  # noqa
    except Exception as exc:
        errors.append(repr(exc))
def tokenizers():
    try:
        from transformers import AutoTokenizer  # noqa
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=f) for f in (load, tokenizers, tokenizers)]
for t in threads: t.start()
for t in threads: t.join()
print(errors or "ok")
"""


def test_concurrent_first_imports_of_transformers_names_succeed():
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "ok", done.stdout
