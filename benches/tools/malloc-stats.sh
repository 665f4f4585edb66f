#!/bin/sh
# Every EVERY seconds, glibc's own account of process PID's heap: gdb calls
# malloc_stats() in it (the process stops for about 0.4 s; its stderr, the
# coordinator's log, gets the report) and one line goes to OUT:
#   <unix time> anon_kib <RssAnon> system <arena bytes> in_use <bytes in use>
# "in use" flat while "system" and RssAnon grow is the heap fragmenting,
# not the program holding more. Stops when the process is gone.
#
#   benches/tools/malloc-stats.sh PID EVERY OUT
set -e
p=$1 every=$2 out=$3
log=$(readlink "/proc/$p/fd/2")
while [ -d "/proc/$p" ]; do
  n0=$(wc -l < "$log")
  gdb -n -batch -iex "set auto-solib-add off" -ex "sharedlibrary libc" \
    -ex "call (void) malloc_stats()" -p "$p" > /dev/null 2>&1 || true
  sleep 1
  t=$(date +%s)
  anon=$(awk '/^RssAnon/{print $2}' "/proc/$p/status" 2>/dev/null) || break
  tail -n +$((n0 + 1)) "$log" | sed 's/\x1b\[[0-9;]*m//g' |
    awk -v t="$t" -v a="$anon" '/^Total/{tot=1} tot&&/system bytes/{s=$4} tot&&/in use bytes/{u=$5} END{print t, "anon_kib", a, "system", s, "in_use", u}' >> "$out"
  sleep "$every"
done
