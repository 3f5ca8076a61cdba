#!/usr/bin/env bash
# Quick start: install what is missing, build, and run the main job on a demo
# model that llmpress writes itself (no download needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash contrib/install-deps.sh
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure
make -j"$(nproc)"
mkdir -p demo
./cli/llmpress synth demo/tiny.gguf
./cli/llmpress inspect demo/tiny.gguf
./cli/llmpress convert demo/tiny.gguf demo/tiny-hf --type bf16
./cli/llmpress inspect demo/tiny-hf
