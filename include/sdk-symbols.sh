#!/bin/sh
# llmpress — the SDK's functions: every lp_ function the installed headers
# declare (not define: a static inline body stays in the header), one a
# line, sorted.  libllmpress.so exports exactly these (pipeline/Makefile.inc
# makes its export list from this output at build time), and
# tests/test-sdk-exports.sh compares the library's dynamic symbols with it.
#
# usage: sdk-symbols.sh CPP [CPPFLAGS...] -- HEADER...
#
# The headers go through the C preprocessor first, so comments, macros and
# conditionals are gone and only the text of the headers given is read (the
# line markers say which file each line came from).  Then, at top level
# (outside braces and parentheses), a name followed by "(" is a function's;
# the declaration ends at ";" (kept) or at a "{" (a definition: dropped).
set -e
cpp=
while [ $# -gt 0 ] && [ "$1" != -- ]; do cpp="$cpp '$(printf %s "$1" | sed "s/'/'\\\\''/g")'"; shift; done
[ "$1" = -- ] || { echo "usage: $0 CPP [CPPFLAGS...] -- HEADER..." >&2; exit 2; }
shift
[ $# -gt 0 ] || { echo "$0: no headers given" >&2; exit 2; }
tu=
for h in "$@"; do
  [ -r "$h" ] || { echo "$0: cannot read header $h" >&2; exit 1; }
  tu="$tu#include \"$(cd "$(dirname "$h")" && pwd)/$(basename "$h")\"
"
done
printf '%s' "$tu" | eval "$cpp" - | awk '
  # Line markers: # N "file" flags.  Keep the text of the llmpress headers only.
  /^# [0-9]+ "/ { f = $3; gsub(/"/, "", f); ours = (f ~ /\/llmpress\/[^\/]+\.h$/); next }
  !ours { next }
  {
    s = $0
    while (length (s) > 0) {
      if (match (s, /^[A-Za-z_][A-Za-z0-9_]*/)) {
        tok = substr (s, 1, RLENGTH); s = substr (s, RLENGTH + 1)
        last = tok; continue
      }
      c = substr (s, 1, 1); s = substr (s, 2)
      if (c == "(") {
        if (braces == 0 && parens == 0 && last ~ /^lp_/) cand[last] = 1
        parens++
      } else if (c == ")") parens--
      else if (c == "{") {
        if (braces == 0 && parens == 0) for (k in cand) delete cand[k]
        braces++
      } else if (c == "}") braces--
      else if (c == ";" && braces == 0 && parens == 0) {
        for (k in cand) { print k; delete cand[k] }
      }
      if (c !~ /[ \t]/) last = ""
    }
  }' | LC_ALL=C sort -u
