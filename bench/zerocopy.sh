#!/usr/bin/env bash
# Copying send vs zero-copy send (MSG_ZEROCOPY, io_uring SEND_ZC) on 127.0.0.1: builds
# bench/zerocopy.c and runs the four modes alternately, RUNS rounds, for each size, so that
# a noisy machine loads every mode alike. Prints mode,size,MB/s,notifications,copied rows.
# Env: SIZES ("65536 1048576"), RUNS (3), DUR (2). Result and decision: docs/performance.md.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
mkdir -p bench/build
cc -std=gnu11 -O2 -Wall -Wextra -o bench/build/zerocopy bench/zerocopy.c -luring || exit 1
for s in ${SIZES:-65536 1048576}; do
  for _ in $(seq "${RUNS:-3}"); do
    for m in copy msgzc uring uringzc; do
      timeout 60 bench/build/zerocopy --mode "$m" --size "$s" --seconds "${DUR:-2}"
    done
  done
done
