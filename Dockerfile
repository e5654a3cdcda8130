# Hugging Face Docker Space (CPU). Build: docker build -t llm-explorer . ; run: docker run -p 7860:7860 llm-explorer
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH LLM_EXPLORER_CACHE=/home/user/.cache/llm_explorer
WORKDIR $HOME/app
COPY --chown=user . .
RUN VENV=$HOME/venv bash scripts/setup.sh install
EXPOSE 7860
CMD ["/home/user/venv/bin/streamlit", "run", "explorer/Home.py", "--server.port", "7860", "--server.address", "0.0.0.0"]
