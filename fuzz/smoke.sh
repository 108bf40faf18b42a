#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 60). Exits non-zero if any
# target fails; its reproducer is left in fuzz/artifacts/TARGET/.
#
# Usage: fuzz/smoke.sh [SECONDS]      (needs cargo-fuzz installed)
set -uo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS]  (a positive whole number)" >&2
    exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")" || exit 2

# cargo fuzz passes nightly-only flags (-Zsanitizer=address and others); this lets the
# stable toolchain accept them, so no nightly toolchain has to be installed.
export RUSTC_BOOTSTRAP=1

targets=(decode_record recover_segment)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
cargo fuzz build || { echo "smoke: build failed" >&2; exit 1; }

# A fresh clone has no corpus: start from exact encodings instead of from nothing.
for target in "${targets[@]}"; do
    if [ -z "$(ls -A "corpus/$target" 2>/dev/null)" ]; then
        cargo run --quiet --example seed_corpus -- corpus || { echo "smoke: seeding the corpus failed" >&2; exit 1; }
        break
    fi
done

failed=()
for target in "${targets[@]}"; do
    echo "smoke: running $target for ${seconds}s"
    if cargo fuzz run "$target" -- -max_total_time="$seconds"; then
        echo "smoke: $target ok"
    else
        echo "smoke: $target FAILED (see fuzz/artifacts/$target/)" >&2
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "smoke: failed: ${failed[*]}" >&2
    exit 1
fi
echo "smoke: all ${#targets[@]} targets ran ${seconds}s each without a crash"
