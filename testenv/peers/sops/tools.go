//go:build tools

// Package tools keeps the command scripts/peers.sh builds in go.mod and go.sum.
package tools

import _ "github.com/getsops/sops/v3/cmd/sops"
