//go:build tools

// Package suite pins franz-go, whose pkg/kgo integration tests
// tests/clients/franz_go_test.sh runs against Strand from the module cache.
// This file only keeps the requirement in go.mod; it is never built.
package suite

import _ "github.com/twmb/franz-go/pkg/kgo"
