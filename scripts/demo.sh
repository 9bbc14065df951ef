#!/usr/bin/env bash
# The main job from a fresh clone: set up .venv, then run the built-in demo pipeline on the
# embedded SmolLM2-135M-Instruct model (no hosted endpoint, no model hub).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/rlaif demo "$@"
