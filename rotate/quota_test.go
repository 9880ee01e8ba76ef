package rotate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// vaultCounter is a reverse proxy in front of the real Vault that counts what Vault answered,
// by status, for requests to the KV mount secret/ (the ones a quota on that mount meters).
type vaultCounter struct {
	mu       sync.Mutex
	answered map[int]int
	first    time.Time
	last     time.Time
}

func startVaultCounter(t *testing.T, vaultAddr string) (*vaultCounter, string) {
	t.Helper()
	u, err := url.Parse(vaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	c := &vaultCounter{answered: map[int]int{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if strings.HasPrefix(resp.Request.URL.Path, "/v1/secret/") {
			c.mu.Lock()
			c.answered[resp.StatusCode]++
			now := time.Now()
			if c.first.IsZero() {
				c.first = now
			}
			c.last = now
			c.mu.Unlock()
		}
		return nil
	}
	ts := httptest.NewServer(proxy)
	t.Cleanup(ts.Close)
	return c, ts.URL
}

// kv is how many KV requests Vault answered with a status other than 429 (those it carried
// out), and how many it refused with 429.
func (c *vaultCounter) kv() (done, refused int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for status, n := range c.answered {
		if status == http.StatusTooManyRequests {
			refused += n
		} else {
			done += n
		}
	}
	return done, refused
}

// TestVaultRateLimitQuota runs a pass over 500 connections against a Vault whose KV mount has a
// rate-limit quota (Vault's own, created through sys/quotas/rate-limit, answering 429 past it).
// Every rotation must finish (none failed), every refresh token in Vault must be the server's
// current one, and the server must have seen one token request per rotation: nothing spent twice,
// nothing spent and not stored. The job must slow down rather than hammer Vault (at most one 429
// for ten requests carried out), and the pass must take at least half the time the quota allows
// for the KV requests it made (the quota was in force) and at most three times it.
func TestVaultRateLimitQuota(t *testing.T) {
	t.Parallel()
	const n, quota = 500, 100.0 // requests a second on secret/
	p := newPartnerWorld(t, n)
	counter, addr := startVaultCounter(t, p.vault.Addr)
	if _, err := p.vault.Client.Logical().Write("sys/quotas/rate-limit/kv", map[string]any{
		"path": "secret/", "rate": quota, "interval": "1s"}); err != nil {
		t.Fatalf("create the quota: %v", err)
	}
	r := p.rotator()
	r.Store = openStore(t, addr, p.vault.Token)
	r.Concurrency = 8
	start := time.Now()
	res := r.Pass(context.Background())
	took := time.Since(start)
	if _, err := p.vault.Client.Logical().Delete("sys/quotas/rate-limit/kv"); err != nil {
		t.Fatalf("delete the quota: %v", err)
	}

	outcomes := map[Outcome]int{}
	for _, x := range res {
		outcomes[x.Outcome]++
		if x.Outcome != Rotated && outcomes[x.Outcome] <= 3 {
			t.Errorf("%s: %s %v", x.Client, x.Outcome, x.Err)
		}
	}
	stale := 0
	for _, x := range res {
		d := p.data("stora/partner/connections/" + strings.TrimPrefix(x.Client, "partner/"))
		if rt, _ := d["refresh_token"].(string); !p.stora.RefreshTokenValid(rt) || d[keyClaim] != nil {
			stale++
		}
	}
	requests := len(p.stora.Requests())
	done, refused := counter.kv()
	perRotation := float64(done) / float64(max(outcomes[Rotated], 1))
	floor := time.Duration(float64(done) / quota * float64(time.Second))
	ratio := took.Seconds() / floor.Seconds()
	t.Logf("%d connections, quota %.0f/s on secret/: %v rotated in %v; %d KV requests carried out (%.1f a rotation), %d answered 429; quota-implied minimum %v, ratio %.2f; %d token requests; %d connections without the server's current refresh token or with a claim left",
		n, quota, outcomes, took.Round(time.Millisecond), done, perRotation, refused, floor.Round(time.Millisecond), ratio, requests, stale)
	if outcomes[Rotated] != n || len(res) != n {
		t.Errorf("%d of %d connections rotated (%v), want all", outcomes[Rotated], n, outcomes)
	}
	if stale != 0 {
		t.Errorf("%d connections do not hold the server's current refresh token, or kept a claim", stale)
	}
	if requests != outcomes[Rotated] {
		t.Errorf("%d token requests for %d rotations: want one each", requests, outcomes[Rotated])
	}
	if refused == 0 {
		t.Errorf("Vault refused nothing: the quota was not in force")
	}
	if refused > done/10 {
		t.Errorf("%d requests answered 429 for %d carried out: the job did not slow down (want at most one in ten)", refused, done)
	}
	if ratio < 0.5 || ratio > 3 {
		t.Errorf("the pass took %.2f times the %v the quota implies; want between 0.5 and 3", ratio, floor)
	}
	t.Logf("RELIABILITY quota | %.0f requests/s (interval 1s), %d connections in one pass, concurrency 8 | slowed down and sent each refused request again: %d answered 429 for %d carried out (the test fails above 1 in 10); %.1f KV requests a rotation | %d of %d rotated, %d failed; %d token requests; every connection holds the server's current refresh token; pass %v, %.2f× the %v the quota implies (the test fails outside 0.5–3×)",
		quota, n, refused, done, perRotation, outcomes[Rotated], n, outcomes[Failed], requests, took.Round(100*time.Millisecond), ratio, floor.Round(100*time.Millisecond))
}
