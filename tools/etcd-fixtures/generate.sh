#!/usr/bin/env bash
# Regenerates tests/fixtures/raftpb/*.bin with etcd's own raftpb marshallers (etcd 3.4,
# from Debian's golang-etcd-server-dev, built in GOPATH mode with Debian's golang-go).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/go.etcd.io/etcd ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-etcd-server-dev
fi
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
mkdir -p "$build/src/etcd-fixtures"
cp "$here/main.go" "$build/src/etcd-fixtures/"
(cd "$build/src/etcd-fixtures" && GOPATH="$build:/usr/share/gocode" GO111MODULE=off go build -o "$build/etcd-fixtures" .)
mkdir -p "$root/tests/fixtures/raftpb"
"$build/etcd-fixtures" "$root/tests/fixtures/raftpb"
ls -l "$root/tests/fixtures/raftpb"
