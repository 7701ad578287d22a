#!/usr/bin/env bash
# Installs Shopify's Toxiproxy server (pinned) from the Go module proxy into ~/.cache/chaoseater/go/bin
# when missing, and prints its path. Used by `cargo bench --bench proxy` for the side-by-side figures.
set -euo pipefail
VERSION=v2.12.0
export GOPATH="${GOPATH:-$HOME/.cache/chaoseater/go}"
BIN="$HOME/.cache/chaoseater/toxiproxy-$VERSION"
if [ ! -x "$BIN/server" ]; then
  mkdir -p "$BIN"
  GOBIN="$BIN" go install "github.com/Shopify/toxiproxy/v2/cmd/server@$VERSION" >&2
fi
echo "$BIN/server"
