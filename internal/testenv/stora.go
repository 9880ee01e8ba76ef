package testenv

import (
	"net/http/httptest"
	"testing"

	"token-rotator/internal/storafake"
)

// Stora is a running Stora-compatible token endpoint.
type Stora struct {
	*storafake.Server
	// TokenURL is its http://127.0.0.1:PORT/oauth2/token address.
	TokenURL string
	// BaseURL is its http://127.0.0.1:PORT address.
	BaseURL string
}

// StartStora serves a new storafake.Server on a loopback port until the test ends.
func StartStora(tb testing.TB) *Stora {
	tb.Helper()
	s := storafake.New()
	ts := httptest.NewServer(s.Handler())
	tb.Cleanup(ts.Close)
	return &Stora{Server: s, TokenURL: ts.URL + "/oauth2/token", BaseURL: ts.URL}
}
