#!/bin/sh
# Build the load generator into benchmarks/bin/ (gitignored).
set -e
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/bin"
gcc -O2 -Wall -Wextra -pthread -o "$here/bin/loadgen" "$here/loadgen.c"
