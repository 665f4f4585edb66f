#!/bin/sh
# Runs edgeplane under heaptrack's preload library, for `bench soak
# --coordinator-bin benches/tools/heaptrack-wrap.sh`. Unlike `heaptrack
# edgeplane ...` it execs the binary, so the pid the bench reads from /proc
# stays the coordinator's, and the bench's SIGKILL at the end leaves the
# profile complete (the interpreter finishes when the pipe closes).
#
#   HEAP_OUT=/tmp/coord EDGEPLANE=target/release/edgeplane \
#     edgeplane bench soak ... --coordinator-bin benches/tools/heaptrack-wrap.sh
#   heaptrack_print -f /tmp/coord.zst            # live at the end = "leaked"
#   heaptrack_print -f long.zst -d short.zst     # what grew between two runs
#
# Needs Debian's heaptrack and zstd.
set -e
out=${HEAP_OUT:-/tmp/edgeplane-heaptrack}
lib=/usr/lib/heaptrack
pipe=$out.pipe
rm -f "$pipe"
mkfifo "$pipe"
"$lib/libexec/heaptrack_interpret" < "$pipe" | zstd -q -c > "$out.zst" &
LD_PRELOAD="$lib/libheaptrack_preload.so" DUMP_HEAPTRACK_OUTPUT="$pipe" \
  exec "${EDGEPLANE:-edgeplane}" "$@"
