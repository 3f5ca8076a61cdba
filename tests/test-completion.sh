#!/bin/sh
# llmpress — the bash completion (cli/bash-completion/llmpress): sourced into bash,
# called the way bash calls it (COMP_WORDS, COMP_CWORD, and the word
# readline replaces as $2), its COMPREPLY holds a command, an option of
# `eval`, pass names, a parameter of quantize.rtn and enum values, all
# asked of the built llmpress (tests/Makefile.inc sets LLMPRESS_BIN and
# LLMPRESS_PLUGIN_PATH).  TAP.
set -u
srcdir=${srcdir:-.}
bin=${LLMPRESS_BIN:-./cli/llmpress}
# Run by hand: the passes of the built plugins.
LLMPRESS_PLUGIN_PATH=${LLMPRESS_PLUGIN_PATH:-${builddir:-.}/plugins/.libs}
export LLMPRESS_PLUGIN_PATH
command -v bash > /dev/null || { echo "1..0 # SKIP bash not found"; exit 0; }
[ -x "$bin" ] || { echo "Bail out! $bin is missing (build first)"; exit 99; }

exec bash -s "$srcdir/cli/bash-completion/llmpress" "$bin" <<'EOF'
set -u
source "$1"
bin=$2
n=0 failed=0
# check NAME EXPECTED CWORD-TEXT WORD... : COMP_WORDS=(WORD...) with the
# cursor on the last, readline's word CWORD-TEXT; EXPECTED is COMPREPLY,
# sorted, '|'-separated.
check() {
  local name=$1 want=$2 text=$3
  shift 3
  COMP_WORDS=("$bin" "$@")
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMPREPLY=()
  _llmpress llmpress "$text" "${COMP_WORDS[COMP_CWORD - 1]}"
  local got
  got=$(printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort | tr '\n' '|')
  got=${got%|}
  n=$((n + 1))
  if [ "$got" = "$want" ]; then
    echo "ok $n - $name"
  else
    echo "not ok $n - $name: expected [$want], got [$got]"
    failed=1
  fi
}
echo "1..11"
check "a command from its prefix" "eval" "ev" ev
check "the commands starting with g" "generate|graph" "g" g
check "an option of eval" "--llama-cpp" "--ll" eval --ll
check "an option of eval taking a value" "--max-windows=" "--max" eval --max
check "pass names (describe)" "quantize.awq|quantize.codebook|quantize.gptq|quantize.rtn" "quantize." describe quantize.
# In an open quote a sole match comes twice, with and without a blank,
# so that readline inserts it without closing the quote.
check "a pass name in an inline pipeline" "load path=m ! quantize.rtn|load path=m ! quantize.rtn " "load path=m ! quantize.r" \
  run -p "'load path=m ! quantize.r"
check "a parameter of quantize.rtn" "quantize.rtn group_size=|quantize.rtn group_size= " "quantize.rtn gr" run -p "'quantize.rtn gr"
check "enum values of format" "quantize.rtn format=q4_0|quantize.rtn format=q4_1|quantize.rtn format=q4_k" \
  "quantize.rtn format=q4" run -p "'quantize.rtn format=q4"
# Bash splits --pipeline='... at '=': the pieces are joined back, and only
# the part after '=' is replaced.
check "enum values after --pipeline=" "quantize.rtn format=q8_0|quantize.rtn format=q8_0 " "quantize.rtn format=q8" \
  run --pipeline = "'quantize.rtn format=q8"
check "the words cache takes" "gc" "g" cache g
# generate's -p is its prompt, not a pipeline: no pass names there.
check "no pass names in generate's prompt" "" "quant" generate -p quant
exit $failed
EOF
