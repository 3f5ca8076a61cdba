#!/bin/sh
# llmpress — TAP: the library's folders include each other one way only
# (contrib/check-includes.sh), by their includes and by the symbols their
# built objects use, and the check fails where it must: on small fake trees
# with an include cycle, an upward include, an ambiguous header and a cycle
# of symbols, each named in its message.
srcdir=${srcdir:-$(dirname "$0")/..}
check="${SHELL:-/bin/sh} $srcdir/contrib/check-includes.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lp-layers.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

echo "1..9"
n=0
# result DESCRIPTION STATUS WANT_STATUS [TEXT_EXPECTED_IN_OUTPUT]
result () {
  n=$((n + 1))
  if [ "$2" -eq "$3" ] && { [ -z "${4:-}" ] || grep -qF -- "$4" "$tmp/out"; }; then
    echo "ok $n - $1"
  else
    echo "not ok $n - $1 (exit $2, expected $3${4:+, and a line with: $4})"
    sed 's/^/# /' "$tmp/out"
  fi
}
# tree NAME FILE CONTENT [FILE CONTENT ...]: a fake tree under $tmp/NAME.
tree () {
  t=$tmp/$1
  shift
  while [ $# -ge 2 ]; do
    mkdir -p "$(dirname "$t/$1")"
    printf '%s\n' "$2" > "$t/$1"
    shift 2
  done
}

$check > "$tmp/out" 2>&1
result "the library's folders include only down the order" $? 0

# b over a, each including its own header, and headers outside the check.
tree clean a/a.h '#pragma once' a/a.c '#include "config.h"
#include "a.h"' b/b.h '#include "a.h"' b/b.c '#include "b.h"
#include <llmpress/llmpress.h>'
$check -C "$tmp/clean" a b > "$tmp/out" 2>&1
result "a fake tree that includes down the order passes" $? 0

# a -> b -> c -> a: the cycle is named with the include that makes each step.
tree cycle a/a.c '#include "b.h"' b/b.h '#include "c.h"' c/c.h '#include "a.h"' a/a.h '#pragma once'
$check -C "$tmp/cycle" a b c > "$tmp/out" 2>&1
result "a fake tree with an include cycle fails, naming it" $? 1 \
  'include cycle between folders: a -> b -> c -> a (a/a.c includes b/b.h; b/b.h includes c/c.h; c/c.h includes a/a.h)'

# The same tree checked in another order still has the cycle.
$check -C "$tmp/cycle" c b a > "$tmp/out" 2>&1
result "the cycle is found whatever the order" $? 1 'include cycle between folders: '

# A lower folder including an upper folder's header, with no cycle.
tree up a/a.c '#include "b.h"' b/b.h '#pragma once'
$check -C "$tmp/up" a b > "$tmp/out" 2>&1
result "a lower folder including an upper folder's header fails" $? 1 \
  'a/a.c includes "b.h" from b/, a layer above a/ (order, bottom to top: a b)'

# A header name in two folders: what it resolves to depends on -I order.
tree twice a/x.h '#pragma once' b/x.h '#pragma once' c/c.c '#include "x.h"'
$check -C "$tmp/twice" a b c > "$tmp/out" 2>&1
result "a header name in two folders fails" $? 1 'c/c.c includes "x.h", which is in 2 folders (a b)'

# The symbols the built objects use (run from the build tree, as make check
# does): calls through the SDK's headers too.
if command -v "${NM:-nm}" > /dev/null 2>&1; then
  $check --symbols -C . > "$tmp/out" 2>&1
  result "the library's built objects use only symbols of their layer or below" $? 0
else
  n=$((n + 1))
  echo "ok $n # SKIP no nm to list the objects' symbols"
fi

# Objects of a fake tree, listed by a stand-in for nm: a/x.o calls b's
# function and b/y.o a's.
tree objs a/x.c '' a/.libs/x.o '' b/y.c '' b/.libs/y.o '' b/.libs/stale.o ''
cat > "$tmp/nm" <<'EOF_NM'
#!/bin/sh
case "$3" in
  */x.o) printf 'lp_a T 0 8\nlp_b U\n' ;;
  */y.o) printf 'lp_b T 0 8\nlp_a U\ng_free U\n' ;;
  *) printf 'lp_a T 0 8\n' ;; # stale.o, whose source is gone: never read
esac
EOF_NM
chmod +x "$tmp/nm"
LP_SRCDIR=$tmp/objs NM=$tmp/nm $check --symbols -C "$tmp/objs" a b > "$tmp/out" 2>&1
result "a fake tree whose objects call each other fails, naming the cycle" $? 1 \
  'symbol cycle between folders: a -> b -> a (a/x.o uses lp_b (b); b/y.o uses lp_a (a))'

# The same folders as one layer ("a+b") may call each other.
LP_SRCDIR=$tmp/objs NM=$tmp/nm $check --symbols -C "$tmp/objs" a+b > "$tmp/out" 2>&1
result "folders of one layer may use each other" $? 0
