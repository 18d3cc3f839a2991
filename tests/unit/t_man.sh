#!/bin/sh
# t_man.sh: the manual pages format cleanly: groff with every warning and man --warnings
# print nothing, and each page has its NAME, SYNOPSIS and DESCRIPTION sections (TAP).
dir="${top_builddir:-.}/man"
pages="container-manager.8 container-manager.conf.5"
if ! command -v groff >/dev/null 2>&1; then
	echo "1..0 # SKIP groff is not installed"
	exit 0
fi
echo "1..6"
n=0
for p in $pages; do
	f="$dir/$p"
	n=$((n + 1))
	out=$(LC_ALL=C.UTF-8 groff -ww -z -man "$f" 2>&1)
	if [ -f "$f" ] && [ -z "$out" ]; then echo "ok $n - groff -ww: $p has no warning"; else echo "not ok $n - groff -ww: $p"; echo "$out" | sed 's/^/# /'; fi
	n=$((n + 1))
	if command -v man >/dev/null 2>&1; then
		# (a configured path longer than a line cannot be adjusted: that depends on the prefix
		# of this build, not on the page, so that one warning is left out)
		out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$f" 2>&1 >/dev/null | grep -v -e 'cannot adjust line' -e "can't break line")
		if [ -z "$out" ]; then echo "ok $n - man --warnings: $p has no warning"; else echo "not ok $n - man --warnings: $p"; echo "$out" | sed 's/^/# /'; fi
	else
		echo "ok $n - man --warnings: $p # SKIP man is not installed"
	fi
	n=$((n + 1))
	if grep -q '^\.SH NAME' "$f" && grep -q '^\.SH SYNOPSIS' "$f" && grep -q '^\.SH DESCRIPTION' "$f" && ! grep -q '@[A-Z]*@' "$f"; then
		echo "ok $n - $p has NAME, SYNOPSIS, DESCRIPTION and no placeholder left"
	else
		echo "not ok $n - $p has NAME, SYNOPSIS, DESCRIPTION and no placeholder left"
	fi
done
