package rotate

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"token-rotator/config"
	"token-rotator/internal/faultproxy"
	"token-rotator/internal/testenv"
)

// logLines decodes the JSON log lines whose msg is msg.
func logLines(t *testing.T, out, msg string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["msg"] == msg {
			lines = append(lines, m)
		}
	}
	return lines
}

// debugLogger logs JSON at debug level to the returned buffer.
func debugLogger() (*slog.Logger, *testenv.SyncBuffer) {
	var b testenv.SyncBuffer
	return slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

// echoSecrets answers a token request with status and an error description quoting every value
// the request sent, as a careless gateway might: none of it may reach a log line.
func echoSecrets(w http.ResponseWriter, r *http.Request, status int) {
	var body map[string]string
	json.NewDecoder(r.Body).Decode(&body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": "temporarily_unavailable",
		"error_description": fmt.Sprintf("down; you sent %s / %s / %s", body["client_secret"], body["refresh_token"], body["code"])})
}

// waited is a retry line's wait.
func waited(l map[string]any) time.Duration {
	s, _ := l["wait"].(string)
	d, _ := time.ParseDuration(s)
	return d
}

func TestEachTokenRequestRetryIsADebugLine(t *testing.T) {
	t.Parallel()
	f := newFaultWorld(t, true)
	noSecret := func(t *testing.T, out string, secrets ...string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("the log holds a secret value %.6s…:\n%s", s, out)
			}
		}
	}

	t.Run("503 until the retry budget ends: one line per request the server saw", func(t *testing.T) {
		id, secret := f.stora.AddClient()
		f.put("stora/down", map[string]any{"client_id": id, "client_secret": secret})
		c := config.Client{Name: "down", Grant: config.GrantClientCredentials, Scope: "public.contact:read", Secret: "stora/down", Output: "apps/down"}
		f.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool { echoSecrets(w, r, 503); return true }
		defer func() { f.stora.Intercept = nil }()
		r := f.rotator(c)
		r.GrantRetry = 2 * time.Second
		log, out := debugLogger()
		r.Logger = log
		before := len(f.stora.Requests())
		if res := r.Pass(context.Background())[0]; res.Outcome != Failed {
			t.Fatalf("outcome %s, want failed", res.Outcome)
		}
		seen := len(f.stora.Requests()) - before
		retries, last := logLines(t, out.String(), "token request failed; retrying"), logLines(t, out.String(), "token request failed; not retried")
		if len(retries) != seen-1 || len(last) != 1 || seen < 3 {
			t.Fatalf("server saw %d requests; the log has %d retry lines and %d not-retried lines, want %d and 1:\n%s", seen, len(retries), len(last), seen-1, out)
		}
		for i, l := range append(retries, last...) {
			if l["level"] != "DEBUG" || l["client"] != "down" || l["attempt"] != float64(i+1) || l["http_status"] != float64(503) ||
				!strings.Contains(l["error"].(string), "HTTP 503 temporarily_unavailable") {
				t.Errorf("line %d: %v", i+1, l)
			}
			if i < len(retries) && (l["wait"] == nil || l["retry_budget_left"] == nil) {
				t.Errorf("retry line %d names no wait or budget: %v", i+1, l)
			}
		}
		if l := last[0]; !strings.Contains(l["reason"].(string), "retry budget") {
			t.Errorf("last line's reason: %v", l["reason"])
		}
		noSecret(t, out.String(), secret)
	})

	t.Run("429 with Retry-After or RateLimit-Reset: the line names the header and its wait", func(t *testing.T) {
		for _, header := range []string{"Retry-After", "RateLimit-Reset"} {
			id, secret := f.stora.AddClient()
			name := "limited-" + strings.ToLower(header)
			f.put("stora/"+name, map[string]any{"client_id": id, "client_secret": secret})
			c := config.Client{Name: name, Grant: config.GrantClientCredentials, Scope: "public.contact:read", Secret: "stora/" + name, Output: "apps/" + name}
			var n atomic.Int32
			f.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
				if n.Add(1) > 1 {
					return false
				}
				w.Header().Set(header, "1")
				echoSecrets(w, r, 429)
				return true
			}
			r := f.rotator(c)
			log, out := debugLogger()
			r.Logger = log
			res := r.Pass(context.Background())[0]
			f.stora.Intercept = nil
			retries := logLines(t, out.String(), "token request failed; retrying")
			if res.Outcome != Rotated || n.Load() != 2 || len(retries) != 1 {
				t.Fatalf("%s: outcome %s after %d requests with %d retry lines, want rotated after 2 with 1:\n%s", header, res.Outcome, n.Load(), len(retries), out)
			}
			l := retries[0]
			if l["http_status"] != float64(429) || l["retry_after"] != "1s" || l["retry_after_from"] != header || waited(l) < time.Second {
				t.Errorf("%s: retry line %v", header, l)
			}
			noSecret(t, out.String(), secret, fmt.Sprint(f.data(c.Output)["access_token"]))
		}
	})

	t.Run("endpoint closes every connection: the transport error, one line per connection", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var conns atomic.Int32
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				c.Close()
			}
		}()
		id, secret := f.stora.AddClient()
		f.put("stora/gone", map[string]any{"client_id": id, "client_secret": secret})
		c := config.Client{Name: "gone", Grant: config.GrantClientCredentials, Secret: "stora/gone", Output: "apps/gone"}
		r := f.rotator(c)
		r.Clients[0].TokenURL = "http://" + ln.Addr().String() + "/oauth2/token"
		r.GrantRetry = 2 * time.Second
		log, out := debugLogger()
		r.Logger = log
		r.Pass(context.Background())
		retries, last := logLines(t, out.String(), "token request failed; retrying"), logLines(t, out.String(), "token request failed; not retried")
		if int(conns.Load()) != len(retries)+len(last) || len(last) != 1 || conns.Load() < 2 {
			t.Fatalf("%d connections; %d retry and %d not-retried lines:\n%s", conns.Load(), len(retries), len(last), out)
		}
		for _, l := range retries {
			if l["http_status"] != nil || !strings.HasPrefix(l["error"].(string), "token endpoint: Post ") {
				t.Errorf("retry line of a transport error: %v", l)
			}
		}
		noSecret(t, out.String(), secret)
	})

	t.Run("refresh answered 503 twice: retried once, both lines say so, no token in them", func(t *testing.T) {
		c, old := f.partnerSecret(t, "spent")
		f.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool { echoSecrets(w, r, 503); return true }
		defer func() { f.stora.Intercept = nil }()
		r := f.rotator(c)
		log, out := debugLogger()
		r.Logger = log
		before := len(f.stora.Requests())
		r.Pass(context.Background())
		retries, last := logLines(t, out.String(), "token request failed; retrying"), logLines(t, out.String(), "token request failed; not retried")
		if seen := len(f.stora.Requests()) - before; seen != 2 || len(retries) != 1 || len(last) != 1 {
			t.Fatalf("server saw %d; %d retry and %d not-retried lines, want 2, 1, 1:\n%s", seen, len(retries), len(last), out)
		}
		if retries[0]["max_attempts"] != float64(2) || !strings.Contains(last[0]["reason"].(string), "retried once") {
			t.Errorf("lines: %v / %v", retries[0], last[0])
		}
		noSecret(t, out.String(), old, f.data(c.Secret)["client_secret"].(string))
	})
}

// progressLines returns the "waiting" groups of the pass progress lines, and the last token error
// any of them named.
func progressLines(t *testing.T, out string) (waits []map[string]any, lastError string) {
	t.Helper()
	for _, l := range logLines(t, out, "pass progress") {
		if w, ok := l["waiting"].(map[string]any); ok {
			waits = append(waits, w)
		}
		if e, ok := l["last_token_error"].(string); ok {
			lastError = e
		}
	}
	return waits, lastError
}

// sawWaiting reports whether one progress line counted n rotations waiting for each kind in want.
func sawWaiting(waits []map[string]any, want map[string]float64) bool {
	for _, w := range waits {
		all := true
		for k, n := range want {
			all = all && w[k] == n
		}
		if all {
			return true
		}
	}
	return false
}

func TestProgressLineSaysWhatThePassWaitsFor(t *testing.T) {
	t.Parallel()
	t.Run("token endpoint down: one rotation retrying, the other waiting for the request slot", func(t *testing.T) {
		t.Parallel()
		f := newFaultWorld(t, true)
		var clients []config.Client
		for _, name := range []string{"a", "b"} {
			id, secret := f.stora.AddClient()
			f.put("stora/"+name, map[string]any{"client_id": id, "client_secret": secret})
			clients = append(clients, config.Client{Name: name, Grant: config.GrantClientCredentials, Secret: "stora/" + name, Output: "apps/" + name})
		}
		f.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool { echoSecrets(w, r, 503); return true }
		r := f.rotator(clients...)
		r.GrantRetry, r.GrantBackoff, r.ProgressEvery = 1500*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond
		log, out := debugLogger()
		r.Logger = log
		r.Pass(context.Background())
		waits, lastError := progressLines(t, out.String())
		if !sawWaiting(waits, map[string]float64{"token_retry": 1, "request_slot": 1}) || !strings.Contains(lastError, "HTTP 503") {
			t.Errorf("no progress line with one rotation retrying and one waiting for a slot, naming the 503 (%q):\n%s", lastError, out)
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		t.Parallel()
		f := newFaultWorld(t, true)
		var clients []config.Client
		for _, name := range []string{"a", "b", "c"} {
			id, secret := f.stora.AddClient()
			f.put("stora/"+name, map[string]any{"client_id": id, "client_secret": secret})
			clients = append(clients, config.Client{Name: name, Grant: config.GrantClientCredentials, Secret: "stora/" + name, Output: "apps/" + name})
		}
		r := f.rotator(clients...)
		r.Concurrency, r.RateLimit, r.ProgressEvery = 3, config.RateLimit{PerSecond: 2}, 50*time.Millisecond
		log, out := debugLogger()
		r.Logger = log
		for _, res := range r.Pass(context.Background()) {
			if res.Outcome != Rotated {
				t.Fatalf("%s: %s %v", res.Client, res.Outcome, res.Err)
			}
		}
		if waits, _ := progressLines(t, out.String()); !sawWaiting(waits, map[string]float64{"rate_limit": 2}) {
			t.Errorf("no progress line with two rotations waiting for the rate limit:\n%s", out)
		}
	})
}

func TestProgressLineCountsTheWaitForVault(t *testing.T) {
	t.Setenv("VAULT_MAX_RETRIES", "0") // the job's own waits, not the Vault client's retries
	for _, when := range []string{"before the token request", "during the write-back"} {
		t.Run(when, func(t *testing.T) {
			f := newFaultWorld(t, true)
			c, _ := f.partnerSecret(t, "v")
			outage := func() {
				f.vaultProxy.Set(faultproxy.Refuse)
				time.AfterFunc(time.Second, func() { f.vaultProxy.Set(faultproxy.Pass) })
			}
			if when == "before the token request" {
				outage()
			} else {
				f.stora.Issued = func(string, string) { outage() }
			}
			r := f.rotator(c)
			r.ProgressEvery, r.VaultWait = 50*time.Millisecond, 10*time.Second
			log, out := debugLogger()
			r.Logger = log
			if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
				t.Fatalf("outcome %s: %v", res.Outcome, res.Err)
			}
			if waits, _ := progressLines(t, out.String()); !sawWaiting(waits, map[string]float64{"vault": 1}) {
				t.Errorf("no progress line with the rotation waiting for Vault:\n%s", out)
			}
		})
	}
}

// TestRefusedConnectionSpendsNothing: a refresh whose connection is refused (the token endpoint
// down) never reached the server, so it is not taken for a request that may have spent the
// refresh token: it is retried within the budget like a 503, not once and then rotation_lost;
// once the endpoint is back, the same refresh token rotates.
func TestRefusedConnectionSpendsNothing(t *testing.T) {
	t.Parallel()
	f := newFaultWorld(t, true)
	c, _ := f.partnerSecret(t, "refused")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused until the proxy below listens on it
	target, _ := url.Parse(strings.TrimSuffix(f.tokenURL, "/oauth2/token"))
	go func() {
		time.Sleep(1500 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		srv := &http.Server{Handler: httputil.NewSingleHostReverseProxy(target)}
		t.Cleanup(func() { srv.Close() })
		_ = srv.Serve(ln)
	}()
	r := f.rotator(c)
	r.Clients[0].TokenURL = "http://" + addr + "/oauth2/token"
	r.GrantRetry, r.GrantBackoff = 10*time.Second, 200*time.Millisecond
	log, out := debugLogger()
	r.Logger = log
	res := r.Pass(context.Background())
	if len(res) != 1 || res[0].Outcome != Rotated {
		t.Fatalf("outcomes %+v, want rotated once the endpoint is back:\n%s", res, out)
	}
	if strings.Contains(out.String(), "may have spent") {
		t.Errorf("a refused connection was taken for a request that may have spent the refresh token:\n%s", out)
	}
}
