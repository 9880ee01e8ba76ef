package apptoken

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// TestReadsKVv2AndKVv1 reads the output secret on a KV v2 and a KV v1 mount, the version found
// from the mount, with a Vault token whose policy allows only read on the output path: what
// docs/apps.md tells app teams to grant.
func TestReadsKVv2AndKVv1(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if err := w.vault.Client.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mount   string
		version int
		policy  string
	}{
		{"secret", 2, `path "secret/data/apps/acme" { capabilities = ["read"] }`},
		{"kv1", 1, `path "kv1/apps/acme" { capabilities = ["read"] }`},
	} {
		t.Run(tc.mount, func(t *testing.T) {
			at, _ := w.pair()
			exp := time.Now().Add(2 * time.Hour).Truncate(time.Second)
			putKV(t, w.vault.Client, tc.mount, tc.version, "apps/acme", output(at, exp))
			if err := w.vault.Client.Sys().PutPolicy("app-"+tc.mount, tc.policy); err != nil {
				t.Fatal(err)
			}
			vt, err := w.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"app-" + tc.mount}, NoDefaultPolicy: true})
			if err != nil {
				t.Fatal(err)
			}
			c, _ := w.client(vt.Auth.ClientToken)
			s, err := New(c, Options{Mount: tc.mount, Path: "apps/acme"})
			if err != nil {
				t.Fatalf("New with a read-only policy on the output path: %v", err)
			}
			if s.KVVersion() != tc.version {
				t.Errorf("KV version detected: %d, want %d", s.KVVersion(), tc.version)
			}
			tok, err := s.Token()
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != at || tok.TokenType != "Bearer" || !tok.Expiry.Equal(exp) {
				t.Errorf("token: type %q, expiry %v, right token %v; want Bearer, %v, true", tok.TokenType, tok.Expiry, tok.AccessToken == at, exp)
			}
			if got := get(t, s.Client(nil), w.api.URL); got != http.StatusOK {
				t.Errorf("API call with the token: HTTP %d", got)
			}
		})
	}
}

// TestDefaults: the defaults docs/apps.md gives, and that a short MaxAge shortens MinReadInterval.
func TestDefaults(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s, _ := w.source(Options{Path: "apps/acme"})
	want := Options{Mount: "secret", Path: "apps/acme", ReadBefore: time.Minute, MaxAge: time.Minute, WaitForNew: 10 * time.Second, MinReadInterval: time.Second}
	if s.opts != want {
		t.Errorf("defaults %+v, want %+v", s.opts, want)
	}
	if s, _ := w.source(Options{Path: "apps/acme", MaxAge: 300 * time.Millisecond}); s.opts.MinReadInterval != 300*time.Millisecond {
		t.Errorf("MaxAge 300 ms: MinReadInterval %v, want 300ms", s.opts.MinReadInterval)
	}
}

// TestCachesTheToken: while the token is younger than MaxAge and far from its expiry, Token asks
// Vault nothing, however much longer than MinReadInterval the calls go on.
func TestCachesTheToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	s, n := w.source(Options{Path: "apps/acme", MinReadInterval: time.Millisecond})
	for range 100 {
		if token(t, s) != at {
			t.Fatal("wrong token")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got := n.KVReads("secret", "apps/acme"); got != 1 {
		t.Errorf("100 Token calls over 200 ms read Vault %d times, want 1", got)
	}
	t.Logf("100 Token calls: %d Vault read", n.KVReads("secret", "apps/acme"))
}

// TestColdCallersShareOneRead: callers of a Source that holds no token yet, all at once, cost one
// Vault read between them.
func TestColdCallersShareOneRead(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	s, n := w.source(Options{Path: "apps/acme"})
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if tok, err := s.Token(); err != nil || tok.AccessToken != at {
				t.Errorf("Token: %v, want the token", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if got := n.KVReads("secret", "apps/acme"); got != 1 {
		t.Errorf("20 callers at once, no token cached: %d Vault reads, want 1", got)
	}
}

// TestSeesANewVersionAfterMaxAge: a token read longer than MaxAge ago is read again, in the
// background: the call that finds it stale gets it at once, and a new version written meanwhile
// is what the calls after that read get.
func TestSeesANewVersionAfterMaxAge(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, rt := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	s, n := w.source(Options{Path: "apps/acme", MaxAge: time.Second, MinReadInterval: 10 * time.Millisecond})
	token(t, s)
	at2, _ := w.refresh(rt)
	w.store("apps/acme", at2, time.Now().Add(2*time.Hour))
	if token(t, s) != at {
		t.Error("before MaxAge: want the cached token")
	}
	time.Sleep(1100 * time.Millisecond)
	if token(t, s) != at {
		t.Error("after MaxAge: want the cached token at once, read again in the background")
	}
	if got := readsDone(s, n, "apps/acme", 2); got != 2 {
		t.Errorf("Vault reads: %d, want 2", got)
	}
	if token(t, s) != at2 {
		t.Error("after the read: want the new version's token")
	}
	if got := n.KVReads("secret", "apps/acme"); got != 2 {
		t.Errorf("Vault reads: %d, want still 2", got)
	}
}

// TestReadsAgainNearExpiry: a token with less than ReadBefore left is read again in the
// background (at most once per MinReadInterval) until Vault holds the next one.
func TestReadsAgainNearExpiry(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, rt := w.pair()
	w.store("apps/acme", at, time.Now().Add(30*time.Second)) // less than the default ReadBefore (1 minute)
	s, n := w.source(Options{Path: "apps/acme", MinReadInterval: 100 * time.Millisecond})
	token(t, s)
	token(t, s) // within MinReadInterval: the cached token, no read
	if got := n.KVReads("secret", "apps/acme"); got != 1 {
		t.Errorf("two calls within MinReadInterval: %d Vault reads, want 1", got)
	}
	time.Sleep(150 * time.Millisecond)
	token(t, s) // Vault still holds the same one
	readsDone(s, n, "apps/acme", 2)
	at2, _ := w.refresh(rt)
	w.store("apps/acme", at2, time.Now().Add(2*time.Hour))
	time.Sleep(150 * time.Millisecond)
	if token(t, s) != at {
		t.Error("near expiry, due for a read: want the cached token at once")
	}
	if got := readsDone(s, n, "apps/acme", 3); got != 3 {
		t.Errorf("Vault reads: %d, want 3", got)
	}
	if token(t, s) != at2 {
		t.Error("near expiry: want the next token once a read found it in Vault")
	}
	token(t, s) // two hours left: cached again
	if got := n.KVReads("secret", "apps/acme"); got != 3 {
		t.Errorf("with two hours left: %d Vault reads, want still 3", got)
	}
}

// TestErrorsNameThePathNeverTheToken: each state in which the secret gives no token is its own
// error, naming the mount and path and holding no value from the secret; the Transport returns
// it and sends nothing.
func TestErrorsNameThePathNeverTheToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	ctx := context.Background()
	kv := w.vault.Client.KVv2("secret")
	for _, tc := range []struct {
		name  string
		setup func(path string)
		want  error
		also  string
	}{
		{"missing", func(string) {}, ErrNotFound, "no secret"},
		{"deleted", func(p string) {
			w.store(p, at, time.Now().Add(time.Hour))
			if err := kv.Delete(ctx, p); err != nil {
				t.Fatal(err)
			}
		}, ErrDeleted, "deleted"},
		{"destroyed", func(p string) {
			w.store(p, at, time.Now().Add(time.Hour))
			if err := kv.Destroy(ctx, p, []int{1}); err != nil {
				t.Fatal(err)
			}
		}, ErrDeleted, "destroyed"},
		{"no access_token", func(p string) {
			putKV(t, w.vault.Client, "secret", 2, p, map[string]any{"token_type": "Bearer", "refresh_token": at})
		}, ErrNoAccessToken, "no access_token"},
		{"empty access_token", func(p string) {
			putKV(t, w.vault.Client, "secret", 2, p, map[string]any{"access_token": "", "expires_at": time.Now().Add(time.Hour).Format(time.RFC3339)})
		}, ErrNoAccessToken, "no access_token"},
		{"access_token not a string", func(p string) {
			putKV(t, w.vault.Client, "secret", 2, p, map[string]any{"access_token": map[string]any{"value": at}})
		}, ErrNoAccessToken, "not a string"},
		{"expires_at not RFC 3339", func(p string) {
			putKV(t, w.vault.Client, "secret", 2, p, map[string]any{"access_token": at, "expires_at": at})
		}, ErrBadExpiry, "expires_at is not an RFC 3339 time: was the secret written by token-rotator?"},
		{"expires_at a number", func(p string) {
			putKV(t, w.vault.Client, "secret", 2, p, map[string]any{"access_token": at, "expires_at": time.Now().Add(time.Hour).Unix()})
		}, ErrBadExpiry, "(it is a number, not a string)"},
		{"expired", func(p string) {
			w.store(p, at, time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
		}, ErrExpired, "expired at 2024-05-01T12:00:00Z and was not yet replaced: is token-rotator running?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "apps/" + strings.ReplaceAll(tc.name, " ", "-")
			tc.setup(path)
			s, _ := w.source(Options{Path: path})
			_, err := s.Token()
			var e *Error
			if !errors.Is(err, tc.want) || !errors.As(err, &e) {
				t.Fatalf("error %q, want an *Error matching %v", redact(fmt.Sprint(err), at), tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, "secret/"+path) || !strings.Contains(msg, tc.also) {
				t.Errorf("error %q: want the path secret/%s and %q", redact(msg, at), path, tc.also)
			}
			if strings.Contains(msg, at) {
				t.Error("error holds the token")
			}
			if tc.want == ErrDeleted && !errors.Is(err, ErrNotFound) {
				t.Error("a deleted latest version must match ErrNotFound too")
			}
			before := len(w.api.requests())
			_, err = s.Client(nil).Get(w.api.URL)
			if !errors.Is(err, tc.want) {
				t.Errorf("Transport: error %q, want %v", redact(fmt.Sprint(err), at), tc.want)
			}
			if len(w.api.requests()) != before {
				t.Error("Transport sent a request without a token")
			}
		})
	}
	t.Run("KV v1 missing", func(t *testing.T) {
		if err := w.vault.Client.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
			t.Fatal(err)
		}
		s, _ := w.source(Options{Mount: "kv1", Path: "apps/none"})
		if _, err := s.Token(); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "kv1/apps/none") {
			t.Errorf("error %v, want ErrNotFound naming kv1/apps/none", err)
		}
	})
}

// TestNoExpiryMeansMaxAge: a secret without expires_at is used, with an unknown expiry, until
// MaxAge.
func TestNoExpiryMeansMaxAge(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	putKV(t, w.vault.Client, "secret", 2, "apps/acme", map[string]any{"access_token": at})
	s, n := w.source(Options{Path: "apps/acme", MaxAge: 500 * time.Millisecond, MinReadInterval: 10 * time.Millisecond})
	tok, err := s.Token()
	if err != nil || tok.AccessToken != at || !tok.Expiry.IsZero() {
		t.Fatalf("token %v (zero expiry %v), want the token with no expiry", err, tok != nil && tok.Expiry.IsZero())
	}
	token(t, s)
	time.Sleep(600 * time.Millisecond)
	token(t, s)
	if got := readsDone(s, n, "apps/acme", 2); got != 2 {
		t.Errorf("Vault reads: %d, want 2 (one, then one after MaxAge)", got)
	}
}

// TestVaultDownServesTheCachedToken: when Vault cannot answer (sealed: 503), a cached token that
// has not expired is still given, and Vault is asked again after MinReadInterval, doubling;
// without a cached token the error names the path.
func TestVaultDownServesTheCachedToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	w.store("apps/acme", at, time.Now().Add(30*time.Second)) // within ReadBefore: every call wants a read
	s, n := w.source(Options{Path: "apps/acme", MinReadInterval: 100 * time.Millisecond})
	cold, _ := w.source(Options{Path: "apps/acme"})
	token(t, s)
	if err := w.vault.Client.Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	calls := 0
	for time.Now().Before(deadline) {
		if token(t, s) != at {
			t.Fatal("Vault sealed: want the cached token")
		}
		calls++
		time.Sleep(5 * time.Millisecond)
	}
	reads := n.KVReads("secret", "apps/acme") - 1
	// Reads 100 ms, 200 ms, 400 ms after each failure: 3 or 4 in a second, however many calls.
	if reads < 2 || reads > 5 {
		t.Errorf("Vault sealed for 1 s, %d Token calls: %d reads, want 2 to 5 (backing off)", calls, reads)
	}
	t.Logf("Vault sealed for 1 s: %d Token calls, %d Vault reads, all answered from the cache", calls, reads)
	_, err := cold.Token()
	if err == nil || !strings.Contains(err.Error(), "secret/apps/acme") || !strings.Contains(err.Error(), "503") {
		t.Errorf("no cached token, Vault sealed: error %v, want one naming secret/apps/acme and the 503", err)
	}
}

// TestNeverPrintsTheToken: the Source's String, and every fmt verb on it, name the path only,
// also once it remembers a refused token.
func TestNeverPrintsTheToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	s, _ := w.source(Options{Path: "apps/acme"})
	token(t, s)
	s.mu.Lock()
	s.refused = &at // as after a 401 that no new token followed
	s.mu.Unlock()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X", "%o", "%t", "%10.3v"} {
		if out := fmt.Sprintf(verb, s); strings.Contains(out, at) || !strings.Contains(out, "secret/apps/acme") {
			t.Errorf("%s of a Source: %q", verb, redact(out, at))
		}
	}
}

// redact is msg for a failing test's output: the token replaced by [TOKEN], so that the output
// says whether msg held it, never the token.
func redact(msg, token string) string {
	if token == "" {
		return msg
	}
	return strings.ReplaceAll(msg, token, "[TOKEN]")
}

// TestMisleadingPathsAreRefused: New refuses the forms of a mount and path that would read
// another secret than the one meant, saying what to write instead: the path with its mount
// (as token-rotator's logs print it), and on KV v2 the API's data/ and metadata/ segments. On KV
// v1 a path starting with data/ is just a path.
func TestMisleadingPathsAreRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if err := w.vault.Client.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mount, path string
		want        string
	}{
		{"", "secret/apps/acme", `set Path "apps/acme"`},
		{"secret", "/secret/apps/acme", `set Path "apps/acme"`},
		{"kv1", "kv1/apps/acme", `set Path "apps/acme"`},
		{"secret", "data/apps/acme", `"data/", which the KV v2 API adds itself: set Path "apps/acme"`},
		{"secret", "metadata/apps/acme", `"metadata/", which the KV v2 API adds itself: set Path "apps/acme"`},
		{"secret/data", "apps/acme", `ends in "/data", which the KV v2 API adds itself: set Mount "secret"`},
		{"secret/metadata/", "apps/acme", `set Mount "secret"`},
		{"kv1", "data/apps/acme", ""},
	} {
		c, _ := w.client(w.vault.Token)
		_, err := New(c, Options{Mount: tc.mount, Path: tc.path})
		if tc.want == "" && err != nil {
			t.Errorf("Mount %q, Path %q: %v, want no error", tc.mount, tc.path, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Mount %q, Path %q: %v, want an error saying %s", tc.mount, tc.path, err, tc.want)
		}
	}
}

// TestKVVersionGiven: Options.KVVersion 1 or 2 spares the read of the mount that finds the
// version; a wrong one makes reads find nothing, and then one read of the mount says which
// version to set.
func TestKVVersionGiven(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if err := w.vault.Client.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	at, _ := w.pair()
	putKV(t, w.vault.Client, "kv1", 1, "apps/acme", output(at, time.Now().Add(time.Hour)))
	w.store("apps/acme", at, time.Now().Add(time.Hour))
	for _, tc := range []struct {
		mount   string
		version int
		detects int    // reads of sys/internal/ui/mounts/<mount>
		want    string // the error; "" for the token
	}{
		{"secret", 0, 1, ""},
		{"secret", 2, 0, ""},
		{"kv1", 1, 0, ""},
		{"kv1", 2, 1, "apptoken: read kv1/apps/acme: Options.KVVersion is 2, but mount kv1 is KV version 1: set KVVersion 1, or 0 to detect it"},
		{"secret", 1, 1, "Options.KVVersion is 1, but mount secret is KV version 2: set KVVersion 2"},
	} {
		c, n := w.client(w.vault.Token)
		s, err := New(c, Options{Mount: tc.mount, Path: "apps/acme", KVVersion: tc.version, MinReadInterval: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			tok, err := s.Token()
			if tc.want == "" && (err != nil || tok.AccessToken != at) {
				t.Errorf("%s, KVVersion %d: %v, want the token", tc.mount, tc.version, err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("%s, KVVersion %d: %v, want an error saying %q", tc.mount, tc.version, err, tc.want)
			}
			time.Sleep(5 * time.Millisecond)
		}
		got := n.Count("GET", "/v1/sys/internal/ui/mounts/"+tc.mount)
		if got != tc.detects {
			t.Errorf("%s, KVVersion %d: %d reads of the mount for New and 3 Token calls, want %d", tc.mount, tc.version, got, tc.detects)
		}
	}
}

// TestHungVaultServesTheCachedToken: with Vault hung (its process stopped with SIGSTOP: it
// accepts connections and never answers), a Source whose token is due for a read but has not
// expired gives it at once, through Token and through a Client with a 2-second timeout; a Source
// with no token waits for the read as long as the caller's context allows and says which path
// it was reading.
func TestHungVaultServesTheCachedToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	s, _ := w.source(Options{Path: "apps/acme", MaxAge: 200 * time.Millisecond, MinReadInterval: 50 * time.Millisecond})
	cold, _ := w.source(Options{Path: "apps/acme"})
	token(t, s)
	if err := w.vault.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.vault.Process.Signal(syscall.SIGCONT) })

	client := s.Client(&http.Client{Timeout: 2 * time.Second})
	var slowest time.Duration
	calls := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); calls++ {
		began := time.Now()
		tok, err := s.Token()
		if err != nil || tok.AccessToken != at {
			t.Fatalf("Vault hung: Token gave %v, want the cached token", err)
		}
		resp, err := client.Get(w.api.URL)
		if err != nil {
			t.Fatalf("Vault hung: request failed: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Vault hung: HTTP %d, want 200", resp.StatusCode)
		}
		slowest = max(slowest, time.Since(began))
		time.Sleep(20 * time.Millisecond)
	}
	if slowest > time.Second {
		t.Errorf("Vault hung: the slowest Token and request took %v, want well under 1 s", slowest)
	}
	t.Logf("Vault hung for 2 s: %d Token calls and requests, all with the cached token, the slowest %v", calls, slowest.Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := cold.TokenContext(ctx); err == nil || !strings.Contains(err.Error(), "secret/apps/acme") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("no cached token, Vault hung, 300 ms context: %v, want the context's error naming secret/apps/acme", err)
	}
}
