#!/usr/bin/env bash
# Builds etcd-wal-bench against etcd 3.4's wal package from Debian's golang-etcd-server-dev,
# in GOPATH mode with Debian's golang-go, the same way tools/etcd-fixtures/generate.sh does.
# Usage: build.sh OUTPUT_BINARY_PATH
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUTPUT_BINARY_PATH" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
out_dir="$(dirname "$1")"
mkdir -p "$out_dir"
out="$(cd "$out_dir" && pwd)/$(basename "$1")"
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/go.etcd.io/etcd ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-etcd-server-dev
fi
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
mkdir -p "$build/src/etcd-wal-bench"
cp "$here/main.go" "$build/src/etcd-wal-bench/"
(cd "$build/src/etcd-wal-bench" && GOPATH="$build:/usr/share/gocode" GO111MODULE=off go build -o "$out" .)
