#!/bin/sh
# llmpress — write the man pages, llmpress(1) and llmpress-COMMAND(1) for
# each command `llmpress --help` lists, from --help with help2man.
#   man/update-man.sh HELP2MAN LLMPRESS OUTDIR VERSION
# `make update-man` runs it into the source tree's man/; the pages are
# committed and shipped, so a build needs no help2man.  tests/test-man.sh
# fails when a command has no page or a page's options differ from --help.
set -eu
help2man=$1 bin=$2 out=$3 version=$4
# GOption writes "[OPTION…]" (or "[OPTION?]" outside UTF-8): plain ASCII.
LC_ALL=C
export LC_ALL
tmp=$(mktemp -d "${TMPDIR:-/tmp}/update-man.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The commands and their one-line summaries, as the top --help lists them.
"$bin" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z-]*\)  *\(.*\)$/\1 \2/p' > "$tmp/commands"
[ -s "$tmp/commands" ] || { echo "update-man: no command in '$bin --help'" >&2; exit 1; }

# page NAME PROGRAM SUMMARY SEE-ALSO: help2man's page for PROGRAM (a command
# line), titled NAME, with SEE-ALSO as its last section.
page() {
  printf '[SEE ALSO]\n%s\n' "$4" > "$tmp/include"
  "$help2man" --no-info --no-discard-stderr --version-string="$version" --section=1 \
    --manual="User Commands" --source="llmpress $version" --name="$3" --include="$tmp/include" \
    --output="$tmp/page" "$2"
  title=$(printf '%s' "$1" | tr 'a-z' 'A-Z')
  # Titled and named llmpress-COMMAND, as man and whatis look them up.
  sed -e "s/^\.TH LLMPRESS /.TH $title /" -e 's/\[OPTION?\]/[OPTION...]/g' \
    -e "/^\.SH NAME/{n;s/^llmpress [a-z-]* /$1 /;}" "$tmp/page" > "$out/$1.1"
}

see_also=
while read -r name summary; do
  see_also="$see_also${see_also:+,
}.BR llmpress-$name (1)"
done < "$tmp/commands"
page llmpress "$bin" "compress large language models" "$see_also"
while read -r name summary; do
  page "llmpress-$name" "$bin $name" "$summary" ".BR llmpress (1)"
done < "$tmp/commands"
