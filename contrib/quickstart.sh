#!/usr/bin/env bash
# Quick start: install what is missing, build, and run the main job
# (specs/default.ini: load, evaluate, save) on a model.
#   bash contrib/quickstart.sh [MODEL [DATA]]
# Without MODEL, llmpress writes a small deterministic demo model itself and
# evaluates it on the README, so nothing needs to be downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
bash contrib/build.sh
# Run from the build tree: the plugins are found here until `make install`.
export LLMPRESS_PLUGIN_PATH="$PWD/plugins/.libs${LLMPRESS_PLUGIN_PATH:+:$LLMPRESS_PLUGIN_PATH}"
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
./cli/llmpress run specs/default.ini -D model="$model" -D data="${data:-README.md}" -D windows=100 \
  -D out=model.gguf -o "$out"
