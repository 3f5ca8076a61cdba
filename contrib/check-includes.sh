#!/bin/sh
# llmpress — the library's folders depend on each other one way only.
#
#   contrib/check-includes.sh [--symbols] [-C DIR] [LAYER...]
#
# LAYERs, bottom to top (default: the library's order below), are folders of
# DIR (default: the tree this script is in); "a+b" makes two folders one
# layer.  A layer may use the layers before it, never those after it.
#
# Without --symbols: every `#include "..."` of the layers' .c and .h files is
# resolved as the compiler does with one -I per folder: the including file's
# own folder first, then the one folder that holds the header (a name in two
# folders is an error: it would depend on -I order).  Headers in no listed
# folder (config.h, generated files, the SDK's <llmpress/...>) are outside
# the check.
# With --symbols (DIR: the build tree): the same for the external symbols
# each built object (FOLDER/.libs/*.o, else FOLDER/*.o, of a FOLDER/*.c in
# the source tree: $LP_SRCDIR, default the tree this script is in) uses and
# defines (`nm`, or $NM): calls made through the SDK's headers, which no
# include between folders shows.
#
# It fails, one line a problem, on
#   - a cycle between layers, named layer by layer with the file that makes
#     each step;
#   - a layer using a header (a symbol) of a layer above it, cycle or not.
# Exit status: 0 clean, 1 a problem, 2 bad usage or nothing to read.

# The library's folders, bottom to top (README.md, "Layout").  model and
# backends/cpu are one layer: model's backend dispatch falls back on the
# CPU backend built into the library, which runs model's reference kernels.
LP_LIBRARY_LAYERS="model+backends/cpu tokenizers formats compress schedulers pipeline"

symbols=0
if [ "${1:-}" = "--symbols" ]; then
  symbols=1
  shift
fi
root=$(dirname "$0")/..
if [ "${1:-}" = "-C" ]; then
  [ $# -ge 2 ] || { echo "check-includes: -C expects a directory" >&2; exit 2; }
  root=$2
  shift 2
fi
[ $# -gt 0 ] || set -- $LP_LIBRARY_LAYERS
# The sources the objects are built from (a VPATH build keeps them apart).
srcroot=${LP_SRCDIR:-$(dirname "$0")/..}

# "R rank folder" for each folder of each layer.
folders () {
  r=0
  for layer in "$@"; do
    for d in $(echo "$layer" | tr '+' ' '); do
      echo "R $r $d"
    done
    r=$((r + 1))
  done
}
for d in $(folders "$@" | cut -d' ' -f3); do
  if [ ! -d "$root/$d" ]; then
    echo "check-includes: $root/$d: expected a folder of the library, found nothing there" >&2
    exit 2
  fi
done

# One record a line for awk: "H folder name" for every header (symbol)
# defined there, "I folder file name" for every header included (symbol used).
list_includes () {
  for d in $(folders "$@" | cut -d' ' -f3); do
    for f in "$root/$d"/*.h; do
      [ -f "$f" ] && echo "H $d ${f##*/}"
    done
    for f in "$root/$d"/*.c "$root/$d"/*.h; do
      [ -f "$f" ] || continue
      sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" |
        while read -r inc; do echo "I $d ${f##*/} $inc"; done
    done
  done
}
list_symbols () {
  for d in $(folders "$@" | cut -d' ' -f3); do
    objs=$(ls "$root/$d"/.libs/*.o 2>/dev/null || ls "$root/$d"/*.o 2>/dev/null)
    found=0
    for o in $objs; do
      # Only objects of sources still there: a file moved to another
      # folder leaves its old object behind in a build tree.
      src=${o##*/}
      src=${src#*_la-}
      [ -f "$srcroot/$d/${src%.o}.c" ] || continue
      found=1
      # nm -P: "name type [value size]"; U is used, the other letters defined.
      ${NM:-nm} -P -g "$o" | awk -v d="$d" -v f="${o##*/}" '
        $2 == "U" { print "I", d, f, $1; next }
        $2 ~ /^[TDBRGSVW]$/ { print "H", d, $1 }'
    done
    if [ $found = 0 ]; then
      echo "check-includes: $root/$d: expected the objects of $srcroot/$d/*.c (run make first), found none" >&2
      return 2
    fi
  done
}

{ folders "$@"; if [ $symbols = 1 ]; then list_symbols "$@" || echo "X"; else list_includes "$@"; fi; } |
  awk -v order="$*" -v symbols=$symbols '
BEGIN { n = 0; m = 0 }
$1 == "X" { unread = 1; exit }
$1 == "R" { rank[$3] = $2; lname[$2] = (lname[$2] == "" ? $3 : lname[$2] "+" $3); if ($2 + 1 > n) n = $2 + 1; next }
$1 == "H" { if (!index(" " where[$3] " ", " " $2 " ")) where[$3] = (where[$3] == "" ? $2 : where[$3] " " $2); next }
$1 == "I" { inc_dir[++m] = $2; inc_file[m] = $3; inc_name[m] = $4; next }
END {
  if (unread) exit 2
  bad = 0
  for (i = 1; i <= m; i++) {
    d = inc_dir[i]; h = inc_name[i]
    # Own folder first, as "..." does; then the one folder holding it.
    if (where[h] == "" || index(" " where[h] " ", " " d " ")) continue
    if (split(where[h], hs, " ") > 1) {
      printf "%s/%s %s \"%s\", which is in %d folders (%s): which one it gets depends on -I order\n",
             d, inc_file[i], symbols ? "uses" : "includes", h, length(hs), where[h]
      bad = 1
      continue
    }
    t = where[h]; rd = rank[d]; rt = rank[t]
    if (rd == rt) continue
    if (!((rd, rt) in why))
      why[rd, rt] = symbols ? d "/" inc_file[i] " uses " h " (" t ")" : d "/" inc_file[i] " includes " t "/" h
    edge[rd, rt] = 1
    if (rt > rd) {
      if (symbols)
        printf "%s/%s uses %s from %s/, a layer above %s/ (order, bottom to top: %s)\n", d, inc_file[i], h, t, d, order
      else
        printf "%s/%s includes \"%s\" from %s/, a layer above %s/ (order, bottom to top: %s)\n", d, inc_file[i], h, t, d, order
      bad = 1
    }
  }
  # A cycle through each layer not already named in one: breadth-first
  # from the layer back to itself, so the cycle named is a shortest one.
  for (i = 0; i < n; i++) {
    if (told[i]) continue
    delete seen; delete par
    head = 0; tail = 0; q[tail++] = i; back = -1
    while (head < tail && back < 0) {
      u = q[head++]
      for (v = 0; v < n && back < 0; v++) {
        if (!edge[u, v]) continue
        if (v == i) back = u
        else if (!seen[v]) { seen[v] = 1; par[v] = u; q[tail++] = v }
      }
    }
    if (back < 0) continue
    path = lname[i]; steps = why[back, i]
    for (x = back; x != i; x = par[x]) {
      path = lname[x] " -> " path
      steps = why[par[x], x] "; " steps
      told[x] = 1
    }
    printf "%s cycle between folders: %s -> %s (%s)\n", symbols ? "symbol" : "include", lname[i], path, steps
    bad = 1
  }
  exit bad
}'
