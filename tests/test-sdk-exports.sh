#!/bin/sh
# llmpress — libllmpress.so exports the SDK, nothing more and nothing less:
# its dynamic symbols are exactly the lp_ functions the installed headers
# (include/Makefile.inc's lpinclude_HEADERS) declare.  TAP.
#
# Environment (tests/Makefile.inc sets it): srcdir, builddir, CC, CPP and
# SDK_CPPFLAGS (what the headers need: GLib's include paths).
set -u
srcdir=${srcdir:-.}
builddir=${builddir:-.}
lib="$builddir/pipeline/.libs/libllmpress.so"
internal="$builddir/pipeline/.libs/libllmpress-internal.a"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sdk-exports.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT

echo "1..4"
[ -r "$lib" ] || { echo "Bail out! $lib is missing (build first)"; exit 99; }
command -v nm > /dev/null || { echo "1..0 # SKIP nm (binutils) not found"; exit 0; }

# The installed headers, as include/Makefile.inc lists them.
headers=
for h in $(sed -n 's|^[[:space:]]*\(include/llmpress/[a-z_]*\.h\).*|\1|p' "$srcdir/include/Makefile.inc"); do
  headers="$headers $srcdir/$h"
done
headers="$headers $builddir/include/llmpress/version.h"
# shellcheck disable=SC2086
${SHELL:-sh} "$srcdir/include/sdk-symbols.sh" ${CPP:-cc -E} -I"$srcdir/include" -I"$builddir/include" ${SDK_CPPFLAGS:-} \
  -- $headers > "$tmp/declared" || { echo "Bail out! include/sdk-symbols.sh failed"; exit 99; }

# exports LIB > FILE: the names of the defined dynamic symbols.
exports () { nm -D --defined-only "$1" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | LC_ALL=C sort -u; }

# check N WHAT LIB: "ok" when LIB exports exactly the declared functions.
check () {
  exports "$3" > "$tmp/exported"
  LC_ALL=C comm -23 "$tmp/exported" "$tmp/declared" > "$tmp/extra"
  LC_ALL=C comm -13 "$tmp/exported" "$tmp/declared" > "$tmp/missing"
  if [ -s "$tmp/extra" ] || [ -s "$tmp/missing" ]; then
    echo "not ok $1 - $2"
    [ -s "$tmp/extra" ] && echo "# exported but declared in no installed header ($(wc -l < "$tmp/extra")): $(tr '\n' ' ' < "$tmp/extra")"
    [ -s "$tmp/missing" ] && echo "# declared in an installed header but not exported ($(wc -l < "$tmp/missing")): $(tr '\n' ' ' < "$tmp/missing")"
    return 1
  fi
  echo "ok $1 - $2"
}

# The headers parse to a plausible SDK: known functions in, a static inline
# function and a macro out.
if grep -qx lp_model_load "$tmp/declared" && grep -qx lp_pass_context_get_input "$tmp/declared" \
   && ! grep -qx lp_int_quantize "$tmp/declared" && ! grep -qx lp_plugin_get_info "$tmp/declared"; then
  echo "ok 1 - the headers declare $(wc -l < "$tmp/declared") SDK functions"
else
  echo "not ok 1 - include/sdk-symbols.sh read the headers wrong"
fi

check 2 "libllmpress.so exports exactly the SDK" "$lib"

# The check can fail: the same objects linked without the export list
# export the engine and the internal helpers, and it must say so.
if [ -r "$internal" ] && ${CC:-cc} -shared -o "$tmp/unfiltered.so" -Wl,--whole-archive "$internal" -Wl,--no-whole-archive \
     -Wl,--unresolved-symbols=ignore-all 2> "$tmp/cc.log"; then
  if check 3 "(expected to fail) unfiltered library" "$tmp/unfiltered.so" > "$tmp/out3"; then
    echo "not ok 3 - the check passed a library that exports everything"
  elif grep -q "lp_cache_open" "$tmp/out3" && grep -q "lp_graph_" "$tmp/out3"; then
    echo "ok 3 - the check rejects a library exporting internals ($(wc -l < "$tmp/extra") extra, lp_cache_open among them)"
  else
    echo "not ok 3 - the check failed the unfiltered library without naming lp_cache_open"; sed 's/^/# /' "$tmp/out3"
  fi
else
  echo "ok 3 # SKIP cannot link the internal archive into a shared library: $(head -1 "$tmp/cc.log" 2>/dev/null)"
fi

# And it names a missing function: a declaration the library lacks.
echo lp_sdk_exports_not_defined >> "$tmp/declared"
LC_ALL=C sort -o "$tmp/declared" "$tmp/declared"
if check 4 "(expected to fail) a declared function" "$lib" > "$tmp/out4"; then
  echo "not ok 4 - a declared but undefined function went unnoticed"
elif grep -q "not exported.*lp_sdk_exports_not_defined" "$tmp/out4"; then
  echo "ok 4 - the check names a declared function the library lacks"
else
  echo "not ok 4 - the missing function was not named"; sed 's/^/# /' "$tmp/out4"
fi
