package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"token-rotator/rotate"
)

// TestDebugLogShowsTheTokenEndpointRetries is an operator's first run against a token endpoint that
// answers 503: with --log-level debug every request the server saw is a line saying which attempt
// it was and what comes next, and the progress line says the pass is waiting on the endpoint.
func TestDebugLogShowsTheTokenEndpointRetries(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	e.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"error":"temporarily_unavailable","error_description":"maintenance, client %s"}`, secret)
		return true
	}
	prev := tuneRotator
	tuneRotator = func(r *rotate.Rotator) { // the default budget is 2 minutes of retries
		r.GrantRetry, r.ProgressEvery = 3*time.Second, 500*time.Millisecond
	}
	t.Cleanup(func() { tuneRotator = prev })
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n    output: stora/acme/token\n")

	code, out := e.run("--config", cfg, "--once", "--log-level", "debug", "--log-format", "json")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	n := map[string]int{}
	var progress []map[string]any
	for _, l := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		msg, _ := m["msg"].(string)
		n[msg]++
		if strings.HasPrefix(msg, "token request failed") && (m["client"] != "acme" || m["http_status"] != float64(503) ||
			m["retry_after"] != "1s" || m["retry_after_from"] != "Retry-After" || m["attempt"] != float64(n["token request failed; retrying"]+n["token request failed; not retried"])) {
			t.Errorf("retry line: %s", l)
		}
		if msg == "pass progress" {
			progress = append(progress, m)
		}
	}
	seen := len(e.stora.Requests())
	if seen < 2 || n["token request failed; retrying"] != seen-1 || n["token request failed; not retried"] != 1 {
		t.Errorf("the server saw %d requests; the log has %d retry lines and %d not-retried, want %d and 1:\n%s",
			seen, n["token request failed; retrying"], n["token request failed; not retried"], seen-1, out)
	}
	waiting := false
	for _, m := range progress {
		w, _ := m["waiting"].(map[string]any)
		last, _ := m["last_token_error"].(string)
		waiting = waiting || w["token_retry"] == float64(1) && strings.Contains(last, "HTTP 503 temporarily_unavailable")
	}
	if !waiting {
		t.Errorf("no progress line says the pass waits to retry the token endpoint after its 503:\n%s", out)
	}
	assertNoSecrets(t, out, secret)
	t.Logf("the log of a pass against a token endpoint that answers 503:\n%s", out)
}
