#!/usr/bin/env bash
# fuzz-smoke.sh: `make fuzz-smoke` (part of `make test`). Builds the cargo-fuzz targets in
# fuzz/ and runs each one briefly from its seeds and saved corpus; fails on any crash,
# panic, failed assertion, input slower than 10 s, or memory use past libFuzzer's 2 GB.
#
#   FUZZ_SECONDS   how long each target runs (default 20)
#   FUZZ_TARGETS   which targets (default: every target in fuzz/Cargo.toml)
#
# cargo-fuzz is installed on first use into .tools/cargo-fuzz (gitignored). Targets are
# built with `--sanitizer none`: the code under test is safe Rust, and without a sanitizer
# cargo-fuzz passes no -Z flag, so this runs on the stable toolchain as it is (no nightly,
# no RUSTC_BOOTSTRAP). Build output stays in fuzz/target, the growing corpus in
# fuzz/corpus/<target>/, crash inputs in fuzz/artifacts/<target>/ (all gitignored).
# docs/fuzzing.md has the details and longer runs.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
tools="$root/.tools/cargo-fuzz"
fuzz="$root/fuzz"
seconds="${FUZZ_SECONDS:-20}"

started=$SECONDS
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -qF " $CARGO_FUZZ_VERSION"; then
  echo "fuzz-smoke: installing cargo-fuzz $CARGO_FUZZ_VERSION into ${tools#"$root"/}"
  # A debug build of the tool is enough (it only drives cargo) and compiles faster.
  env -u CARGO_TARGET_DIR -u RUSTFLAGS cargo install cargo-fuzz --locked --debug \
    --version "$CARGO_FUZZ_VERSION" --root "$tools"
fi
installed=$SECONDS

# cargo-fuzz sets RUSTFLAGS itself (coverage instrumentation) and appends the caller's.
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR
cargo_fuzz=("$tools/bin/cargo-fuzz" fuzz)
build_opts=(--fuzz-dir "$fuzz" --sanitizer none --target-dir "$fuzz/target")

# The fuzzed crates build against exactly the versions the server ships: the workspace
# lock file seeds fuzz/Cargo.lock (gitignored) whenever it changes, and cargo adds only the
# fuzz-only crates (libfuzzer-sys, pinned in fuzz/Cargo.toml, and arbitrary).
if [ ! -f "$fuzz/Cargo.lock" ] || [ Cargo.lock -nt "$fuzz/Cargo.lock" ]; then
  cp Cargo.lock "$fuzz/Cargo.lock"
fi

targets="${FUZZ_TARGETS:-$("${cargo_fuzz[@]}" list --fuzz-dir "$fuzz")}"
"${cargo_fuzz[@]}" build "${build_opts[@]}"
built=$SECONDS

for target in $targets; do
  mkdir -p "$fuzz/corpus/$target" "$fuzz/artifacts/$target"
  log="$fuzz/target/fuzz-smoke-$target.log"
  case "$target" in
    # Room for more candidates than max_candidates (4096) in the demo schema.
    rank_request) max_len=16384 ;;
    *) max_len=4096 ;;
  esac
  # corpus/<target> first: libFuzzer writes new inputs to the first directory only, so the
  # committed seeds are never modified. Crash inputs go to fuzz/artifacts/<target>/.
  if "${cargo_fuzz[@]}" run "${build_opts[@]}" "$target" \
    "$fuzz/corpus/$target" "$fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -max_len="$max_len" -print_final_stats=1 \
    >"$log" 2>&1; then
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
    done_line="$(sed -n 's/^#[0-9]*[[:space:]]*DONE *//p' "$log")"
    echo "fuzz-smoke: $target ok: $runs runs in ${seconds}s ($rate/s); $done_line"
  else
    # The target's own report (panic message, failing input), not cargo-fuzz's backtrace.
    {
      grep -m1 -A4 'panicked at' "$log" || true
      sed '/^Error: Fuzz target exited/q' "$log" | tail -n 30
    } >&2
    echo "fuzz-smoke: $target FAILED (full log: ${log#"$root"/}); the input is in" \
      "fuzz/artifacts/$target/. Reproduce with:" >&2
    echo "  ${tools#"$root"/}/bin/cargo-fuzz fuzz run --fuzz-dir fuzz" \
      "--sanitizer none $target fuzz/artifacts/$target/<file>" >&2
    exit 1
  fi
done
echo "fuzz-smoke: passed; install $((installed - started))s, build $((built - installed))s," \
  "runs $((SECONDS - built))s"
