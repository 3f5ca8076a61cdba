#!/bin/sh
# make fuzz: run one libFuzzer target for a while on its seeds.
#   run.sh TARGET SECONDS RUNS FUZZ_SRCDIR BUILDDIR   (RUNS -1: no limit)
# The corpus (fuzz-out/TARGET/corpus) starts from the seeds the library's
# writers make, the committed edge cases and regressions, and the files of
# ../shared listed in shared-seeds; a crash, leak, sanitizer report or hang
# (-timeout) fails, its input left in fuzz-out/TARGET/ to be committed under
# tests/fuzz/regressions/TARGET/ once fixed.
set -u
t=$1 secs=$2 runs=$3 src=$4 build=$5
out=$build/fuzz-out/$t
rm -rf "$out/corpus" && mkdir -p "$out/corpus" "$out/made" || exit 1
"$build/tests/fuzz/make-seeds" "$t" "$out/made" || exit 1
for d in "$out/made" "$src/seeds/$t" "$src/regressions/$t"; do
  [ -d "$d" ] && find "$d" -maxdepth 1 -type f ! -name '.*' -exec cp {} "$out/corpus/" \;
done
shared=${LLMPRESS_SHARED_DIR:-$src/../../../shared}
grep -v '^#' "$src/shared-seeds" | while read -r target path flag; do
  [ "$target" = "$t" ] && [ "${flag:-}" != replay-only ] && [ -f "$shared/$path" ] && cp "$shared/$path" "$out/corpus/"
done
log=$out/fuzz.log
# No leak checks while fuzzing: GLib's type system and the registry keep
# one-time allocations that are not leaks; the replay test under
# --enable-sanitizers checks leaks with the suppressions instead.
ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
  "$build/tests/fuzz/fuzz-$t" -max_total_time="$secs" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out/" "$out/corpus" > "$log" 2>&1
rc=$?
stats=$(grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" | sed 's/^stat:://; s/: */=/' | tr '\n' ' ')
cov=$(grep -E '#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/cov=\1 ft=\2/p')
if [ $rc -eq 0 ]; then
  echo "PASS: fuzz-$t $stats$cov"
else
  echo "FAIL: fuzz-$t (exit $rc; $log, input in $out/):"
  grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -8
fi
exit $rc
