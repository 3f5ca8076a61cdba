#!/usr/bin/env bash
# Quick start: install what is missing, build, and run the main job
# (specs/default.ini: GPTQ into llama-quantize's Q4_K_M mix, evaluated before
# and after, saved as GGUF) on a model, then print the before/after table
# from the run's report.json (llmpress report, which draws it too).
#   bash contrib/quickstart.sh                       # contrib/demo: stories260K on TinyStories
#   bash contrib/quickstart.sh MODEL [DATA [CALIB]]
#   MODEL=m.gguf DATA=eval.txt [CALIB=calib.txt] bash contrib/quickstart.sh
# Other settings, as environment variables: PRESET (Q4_K_M; Q5_K_M, Q3_K_M,
# Q8_0, ...), WINDOWS (evaluation windows, default 64; 0 = all of DATA), CTX
# (window length; default the model's, at most 512), SAMPLES (calibration
# windows, default 32), OUT (output directory, default quickstart-out).
# Without CALIB the calibration windows come from DATA too, so they may
# overlap the evaluation's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash contrib/build.sh
# Run from the build tree: the plugins are found here until `make install`.
export LLMPRESS_PLUGIN_PATH="$PWD/plugins/.libs${LLMPRESS_PLUGIN_PATH:+:$LLMPRESS_PLUGIN_PATH}"
model=${1:-${MODEL:-}}
data=${2:-${DATA:-}}
calib=${3:-${CALIB:-}}
ctx=${CTX:-0}
if [ -z "$model" ]; then
  # The shipped demo (contrib/demo/README.md): a real pretrained model and
  # two disjoint excerpts of its validation text.  It was trained on windows
  # of 512 tokens (its GGUF says 128: the converter's default).
  model=contrib/demo/stories260K.gguf
  data=${data:-contrib/demo/tinystories-eval.txt}
  calib=${calib:-contrib/demo/tinystories-calib.txt}
  ctx=${CTX:-512}
fi
if [ -z "$data" ]; then
  echo "quickstart: expected evaluation text (DATA=FILE or a second argument) with MODEL=$model, found none" >&2
  exit 2
fi
out=${OUT:-quickstart-out}
mkdir -p "$out"
./cli/llmpress inspect "$model" | head -20
defs=(-D model="$model" -D data="$data" -D ctx="$ctx" -D windows="${WINDOWS:-64}"
      -D calib_samples="${SAMPLES:-32}" -D preset="${PRESET:-Q4_K_M}" -D out=model.gguf)
[ -n "$calib" ] && defs+=(-D calib="$calib")
./cli/llmpress run specs/default.ini "${defs[@]}" -o "$out"
./cli/llmpress report "$out"
echo "pictures: $out/report.html ($out/frontier.svg, $out/heatmap.svg)"
echo "compressed model: $out/model.gguf (llama.cpp: llama-cli -m $out/model.gguf)"
