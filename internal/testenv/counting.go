package testenv

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/vault/api"
)

// Requests counts the requests sent through it, by method and path: wrapped around a Vault
// client's transport, it tells how many reads reached Vault.
type Requests struct {
	Base http.RoundTripper

	mu   sync.Mutex
	seen map[string]int // "GET /v1/secret/data/apps/acme" -> count
}

// RoundTrip counts r and sends it through Base.
func (c *Requests) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if c.seen == nil {
		c.seen = map[string]int{}
	}
	c.seen[r.Method+" "+r.URL.Path]++
	c.mu.Unlock()
	return c.Base.RoundTrip(r)
}

// Count is how many requests were sent with method to path (e.g. "/v1/sys/health").
func (c *Requests) Count(method, path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[method+" "+path]
}

// KVReads is how many times the KV v2 secret at path under mount was read.
func (c *Requests) KVReads(mount, path string) int {
	return c.Count(http.MethodGet, "/v1/"+mount+"/data/"+path)
}

// CountingClient is a Vault client of v's, logged in with token, whose requests n counts. Each
// call makes a client of its own, as separate app instances have.
func (v *Vault) CountingClient(tb testing.TB, token string) (c *api.Client, n *Requests) {
	tb.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	n = &Requests{Base: cfg.HttpClient.Transport}
	cfg.HttpClient.Transport = n
	c, err := api.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	c.SetToken(token)
	return c, n
}

// Unauthorized counts the 401s answered to the requests sent through Base into N.
type Unauthorized struct {
	Base http.RoundTripper
	N    *atomic.Int64
}

// RoundTrip sends r through Base and counts a 401 answer.
func (u Unauthorized) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := u.Base.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		u.N.Add(1)
	}
	return resp, err
}
