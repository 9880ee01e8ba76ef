package vault

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"token-rotator/config"
	"token-rotator/internal/testenv"
)

// TestRetryAfterPausesEveryRequest puts a rate-limit quota with a block_interval on the KV mount
// of a real Vault, with Vault's rate-limit response headers on, so that a 429 carries
// Retry-After. Ten readers reading at once must all succeed, and once Vault has refused one, no
// request may reach Vault until the Retry-After it gave has passed: the pause is the client's,
// not each request's.
func TestRetryAfterPausesEveryRequest(t *testing.T) {
	v := testenv.StartVault(t)
	if _, err := v.Client.KVv2("secret").Put(context.Background(), "a", map[string]any{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(v.Addr)
	var mu sync.Mutex
	var firstRefusal, nextAfter time.Time
	var retryAfter string
	refused := 0
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		switch {
		case resp.StatusCode == http.StatusTooManyRequests && firstRefusal.IsZero():
			firstRefusal, retryAfter = now, resp.Header.Get("Retry-After")
		case !firstRefusal.IsZero() && nextAfter.IsZero() && now.Sub(firstRefusal) > 100*time.Millisecond:
			nextAfter = now // the first request sent after those in flight at the refusal
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			refused++
		}
		return nil
	}
	ts := httptest.NewServer(proxy)
	defer ts.Close()
	for path, data := range map[string]map[string]any{
		"sys/quotas/config":        {"enable_rate_limit_response_headers": true},
		"sys/quotas/rate-limit/kv": {"path": "secret/", "rate": 20, "interval": "1s", "block_interval": "3s"},
	} {
		if _, err := v.Client.Logical().Write(path, data); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
	}
	t.Setenv("VAULT_TOKEN", v.Token)
	s, err := Open(context.Background(), config.Vault{Address: ts.URL, KVMount: "secret", Auth: config.Auth{Method: config.AuthToken}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				if _, err := s.Read(context.Background(), "a"); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("read under the quota: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	gap := nextAfter.Sub(firstRefusal)
	t.Logf("50 reads in %v; first 429 said Retry-After: %s; next request reached Vault %v later; %d answered 429",
		time.Since(start).Round(time.Millisecond), retryAfter, gap.Round(time.Millisecond), refused)
	secs, _ := strconv.Atoi(retryAfter)
	if firstRefusal.IsZero() || secs < 1 {
		t.Fatalf("Vault refused nothing, or gave no Retry-After of a second or more (%q): the quota was not in force", retryAfter)
	}
	if gap < time.Duration(secs)*time.Second-100*time.Millisecond {
		t.Errorf("a request reached Vault %v after a 429 that said Retry-After: %s", gap, retryAfter)
	}
	t.Logf("RELIABILITY quota | 20 requests/s with block_interval 3s and enable_rate_limit_response_headers; 10 readers × 5 reads at once | paused every request for the Retry-After: %s Vault gave: the next request reached Vault %v after the first 429 (the test fails below that less 100 ms) | 50 of 50 reads succeeded; %d answered 429",
		retryAfter, gap.Round(10*time.Millisecond), refused)
}
