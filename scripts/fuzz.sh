#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser (cargo fuzz, libFuzzer) through the public API.
#   scripts/fuzz.sh SECONDS_PER_TARGET
# Seeds come from fuzz/corpus/<target> (committed, never written); what the fuzzer learns
# goes to target/fuzz-corpus/<target>. Built without a sanitizer: the core forbids unsafe
# code, and libFuzzer's coverage guidance alone runs five to ten times more inputs a second.
# Prints one line per target and exits non-zero if any target found a crash.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
toolchain=$(cat fuzz/rust-toolchain)
targets=(callback token_response discovery key_set id_token userinfo snapshot sites)

cargo "+$toolchain" fuzz build -s none >/dev/null 2>&1 || { cargo "+$toolchain" fuzz build -s none; exit 1; }
crashed=0
printf 'fuzz: %-15s %12s %8s %10s %s\n' target executions seconds "exec/s" outcome
for target in "${targets[@]}"; do
  work="target/fuzz-corpus/$target"
  mkdir -p "$work"
  log=$(mktemp)
  cargo "+$toolchain" fuzz run -s none "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
  status=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  took=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
  if [ "$status" -eq 0 ] && [ -n "$runs" ]; then
    printf 'fuzz: %-15s %12s %8s %10s %s\n' "$target" "$runs" "$took" "$(( runs / (took > 0 ? took : 1) ))" "0 crashes"
  else
    crashed=1
    printf 'fuzz: %-15s %12s %8s %10s %s\n' "$target" "${runs:-?}" "${took:-?}" "-" "CRASH (artifact in fuzz/artifacts/$target)"
    grep -E "panicked|ERROR|SUMMARY" "$log" | head -5
  fi
  rm -f "$log"
done
exit "$crashed"
