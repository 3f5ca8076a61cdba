#!/usr/bin/env bash
# Quick start: install what is missing, build, and run the main job.
#   bash contrib/quickstart.sh [MODEL [DATA]]
# Without MODEL, llmpress writes a small deterministic demo model itself, so
# nothing needs to be downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
bash contrib/install-deps.sh
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure
make -j"$(nproc)"
out=quickstart-out
mkdir -p "$out"
model=${1:-}
data=${2:-}
if [ -z "$model" ]; then
  model=$out/demo.gguf
  ./cli/llmpress synth "$model"
  data=README.md
fi
./cli/llmpress inspect "$model"
./cli/llmpress convert "$model" "$out/model-bf16" --type bf16
./cli/llmpress convert "$model" "$out/model-f16.gguf" --type f16
if [ -n "$data" ]; then
  ./cli/llmpress eval "$model" --data "$data" --max-windows 50
  ./cli/llmpress eval "$out/model-f16.gguf" --data "$data" --max-windows 50 --reference "$model"
fi
