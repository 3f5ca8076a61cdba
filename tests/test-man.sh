#!/bin/sh
# llmpress — the man pages cannot drift from the program: every command
# `llmpress --help` lists has man/llmpress-COMMAND.1, installed
# (man/Makefile.inc's dist_man1_MANS), and each page lists exactly the
# options the command's --help lists (llmpress.1: the top --help's).
# After changing a command's options: `make update-man` (help2man).  TAP.
#
# Environment (tests/Makefile.inc sets it): srcdir, LLMPRESS_BIN.
set -u
srcdir=${srcdir:-.}
bin=${LLMPRESS_BIN:-./cli/llmpress}
[ -x "$bin" ] || { echo "Bail out! $bin is missing (build first)"; exit 99; }
LC_ALL=C
export LC_ALL
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-man.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT

commands=$("$bin" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z-]*\)  .*/\1/p')
[ -n "$commands" ] || { echo "Bail out! no command in '$bin --help'"; exit 99; }
set -- $commands
echo "1..$(( $# + 1 ))"

# help_options ARGS...: the option names --help prints, sorted, one a line.
help_options() {
  "$bin" "$@" --help | grep -E '^ +-' | sed 's/^ *//; s/  .*//' | grep -oE -- '--?[A-Za-z0-9][A-Za-z0-9-]*' | sort -u
}
# page_options PAGE: the option names of the page's tagged paragraphs
# (the line after each .TP), sorted, one a line.
page_options() {
  sed -n '/^\.TP/{n;p;}' "$1" | sed 's/\\-/-/g' | grep -oE -- '\\fB--?[A-Za-z0-9][A-Za-z0-9-]*' \
    | sed 's/^\\fB//' | sort -u
}

n=0 failed=0
# check NAME PAGE [COMMAND]: the page exists, is installed, and lists the
# options of `llmpress [COMMAND] --help`.
check() {
  name=$1 page=$2
  shift 2
  n=$((n + 1))
  if [ ! -f "$srcdir/man/$page" ]; then
    echo "not ok $n - $name: man/$page is missing (run make update-man)"
    failed=1
    return
  fi
  if ! grep -q "man/$page\\>" "$srcdir/man/Makefile.inc"; then
    echo "not ok $n - $name: man/$page is not in man/Makefile.inc's dist_man1_MANS"
    failed=1
    return
  fi
  help_options "$@" > "$tmp/help"
  page_options "$srcdir/man/$page" > "$tmp/page"
  if [ ! -s "$tmp/help" ]; then
    echo "not ok $n - $name: no option found in --help"
    failed=1
  elif cmp -s "$tmp/help" "$tmp/page"; then
    echo "ok $n - $name: $(wc -l < "$tmp/help") options"
  else
    echo "not ok $n - $name: man/$page differs from --help (run make update-man):"
    diff "$tmp/help" "$tmp/page" | sed -n 's/^\([<>]\)/#   \1/p'
    failed=1
  fi
}

check "llmpress" llmpress.1
for c in "$@"; do
  check "$c" "llmpress-$c.1" "$c"
done
exit $failed
