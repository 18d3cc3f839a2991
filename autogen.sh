#!/bin/sh
# Regenerates the build system (configure, Makefile.in) from configure.ac and Makefile.am.
set -e
cd "$(dirname "$0")"
if ! command -v pkg-config >/dev/null 2>&1; then
	echo "autogen.sh: pkg-config is required (apt-get install pkg-config)" >&2
	exit 1
fi
mkdir -p m4 build-aux
autoreconf -fi
