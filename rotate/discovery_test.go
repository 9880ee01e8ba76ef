package rotate

import (
	"context"
	"errors"
	"testing"

	"token-rotator/config"
	"token-rotator/discovery"
)

type countingDiscoverer struct{ calls map[string]int }

func (d *countingDiscoverer) Discover(_ context.Context, issuer string) (*discovery.Metadata, error) {
	d.calls[issuer]++
	if issuer == "https://down.example" {
		return nil, errors.New("metadata at https://down.example/.well-known/oauth-authorization-server: HTTP 503 Service Unavailable")
	}
	return &discovery.Metadata{Issuer: issuer, TokenEndpoint: issuer + "/token"}, nil
}

// TestEndpointsOncePerIssuerPerPass: within a pass the metadata of an issuer is read once, however
// many clients name it; the next pass (a new endpoints) reads it again, so a daemon follows a
// server that moved its endpoint. A failed read fails the client with the reason.
func TestEndpointsOncePerIssuerPerPass(t *testing.T) {
	d := &countingDiscoverer{calls: map[string]int{}}
	r := &Rotator{Discovery: d}
	for pass := 1; pass <= 2; pass++ {
		endpoints := r.endpoints()
		for _, name := range []string{"a", "b"} {
			c := config.Client{Name: name, Issuer: "https://as.example"}
			if res, ok := endpoints(context.Background(), &c); !ok || c.TokenURL != "https://as.example/token" {
				t.Fatalf("pass %d, %s: ok %v (%+v), token URL %q", pass, name, ok, res, c.TokenURL)
			}
		}
		if d.calls["https://as.example"] != pass {
			t.Errorf("after pass %d: %d metadata reads, want %d", pass, d.calls["https://as.example"], pass)
		}
		c := config.Client{Name: "c", Issuer: "https://down.example"}
		res, ok := endpoints(context.Background(), &c)
		if ok || res.Outcome != Failed || res.Client != "c" || res.Err == nil || res.Err.Error() != "discovery: metadata at https://down.example/.well-known/oauth-authorization-server: HTTP 503 Service Unavailable" {
			t.Errorf("down issuer: ok %v, result %+v", ok, res)
		}
	}
	// A client with a token URL of its own asks nothing.
	c := config.Client{Name: "s", TokenURL: config.DefaultTokenURL}
	if _, ok := r.endpoints()(context.Background(), &c); !ok || c.TokenURL != config.DefaultTokenURL || len(d.calls) != 2 {
		t.Errorf("client with a token_url: ok %v, token URL %q, issuers asked %v", ok, c.TokenURL, d.calls)
	}
}
