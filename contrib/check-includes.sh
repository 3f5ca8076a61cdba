#!/bin/sh
# llmpress — the library's folders depend on each other one way only.
#
#   contrib/check-includes.sh [-C DIR] [FOLDER...]
#
# FOLDERs, bottom to top (default: the library's order below), are folders of
# DIR (default: the tree this script is in).  Every `#include "..."` of their
# .c and .h files is resolved as the compiler does with one -I per folder:
# the including file's own folder first, then the one folder that holds the
# header (a name in two folders is an error: it would depend on -I order).
# Headers in no listed folder (config.h, generated files, the SDK's
# <llmpress/...>) are outside the check.  It fails, one line a problem, on
#   - an include cycle between folders, named folder by folder with the file
#     that makes each step;
#   - an include from a folder of a header in a folder above it, cycle or not.
# Exit status: 0 clean, 1 a problem, 2 bad usage.

# The library's folders, bottom to top (README.md, "Layout").  A folder may
# include headers of the folders before it, never of those after it.
LP_LIBRARY_FOLDERS="model backends/cpu tokenizers formats compress schedulers pipeline"

root=$(dirname "$0")/..
if [ "${1:-}" = "-C" ]; then
  [ $# -ge 2 ] || { echo "check-includes: -C expects a directory" >&2; exit 2; }
  root=$2
  shift 2
fi
[ $# -gt 0 ] || set -- $LP_LIBRARY_FOLDERS

for d in "$@"; do
  if [ ! -d "$root/$d" ]; then
    echo "check-includes: $root/$d: expected a folder of the library, found nothing there" >&2
    exit 2
  fi
done

# One record a line for awk: "F folder" in order, "H folder name" for every
# header there, "I folder file header" for every quoted include.
records () {
  for d in "$@"; do
    echo "F $d"
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

records "$@" | awk -v order="$*" '
BEGIN { n = 0; m = 0 }
$1 == "F" { rank[$2] = n; name[n] = $2; n++; next }
$1 == "H" { where[$3] = (where[$3] == "" ? $2 : where[$3] " " $2); next }
$1 == "I" { inc_dir[++m] = $2; inc_file[m] = $3; inc_hdr[m] = $4; next }
END {
  bad = 0
  for (i = 1; i <= m; i++) {
    d = inc_dir[i]; h = inc_hdr[i]
    # Own folder first, as "..." does; then the one folder holding it.
    if (index(" " where[h] " ", " " d " ")) continue
    if (where[h] == "") continue
    if (split(where[h], hs, " ") > 1) {
      printf "%s/%s includes \"%s\", which is in %d folders (%s): which one it gets depends on -I order\n",
             d, inc_file[i], h, length(hs), where[h]
      bad = 1
      continue
    }
    t = where[h]
    if (!((d, t) in why)) why[d, t] = d "/" inc_file[i] " includes " t "/" h
    edge[rank[d], rank[t]] = 1
    if (rank[t] > rank[d]) {
      printf "%s/%s includes \"%s\" from %s/, a folder above %s/ (order, bottom to top: %s)\n",
             d, inc_file[i], h, t, d, order
      bad = 1
    }
  }
  # A cycle through each folder not already named in one: breadth-first
  # from the folder back to itself, so the cycle named is a shortest one.
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
    path = name[i]; steps = why[name[back], name[i]]
    for (x = back; x != i; x = par[x]) {
      path = name[x] " -> " path
      steps = why[name[par[x]], name[x]] "; " steps
      told[x] = 1
    }
    printf "include cycle between folders: %s -> %s (%s)\n", name[i], path, steps
    bad = 1
  }
  exit bad
}'
