package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// TestRefreshTokenThatExpires runs the job, with real Vault, against a server whose refresh tokens
// expire 20 minutes after issue and say so (refresh_token_expires_in, as GitHub Apps send it): a
// stored refresh token about to expire is refreshed though the access token is fresh (one request,
// by the server's count); the new expiry lands in the credential secret, not in the output apps
// read; status (JSON and table), validate and the pushed metric show it and warn; when the server
// stops sending it, the next rotation removes the stored value, the warnings and the metric go,
// and the next pass has nothing to do.
func TestRefreshTokenThatExpires(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var pushed []map[string]float64
	pg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		values := map[string]float64{}
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		for {
			var mf dto.MetricFamily
			if dec.Decode(&mf) != nil {
				break
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "client" {
						values[mf.GetName()+"{"+l.GetValue()+"}"] = m.GetGauge().GetValue()
					}
				}
			}
		}
		mu.Lock()
		pushed = append(pushed, values)
		mu.Unlock()
	}))
	defer pg.Close()
	const metric = "token_rotator_refresh_token_expiry_timestamp_seconds{partner}"
	lastPush := func() map[string]float64 {
		mu.Lock()
		defer mu.Unlock()
		if len(pushed) == 0 {
			return nil
		}
		return pushed[len(pushed)-1]
	}

	id, secret := e.stora.AddClient()
	e.stora.SetRefreshTokenTTL(20 * time.Minute)
	at, rt := e.stora.IssueTokenPair(id, "public.contact:read")
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": rt,
		"refresh_token_expires_at": time.Now().Add(20 * time.Minute).UTC().Format(time.RFC3339)})
	e.put("apps/partner", map[string]any{"access_token": at, "token_type": "Bearer",
		"expires_at": time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: stora/partner\n    output: apps/partner\n")

	before := time.Now().UTC().Truncate(time.Second)
	code, out := e.run("--config", cfg, "--once", "--pushgateway", pg.URL)
	after := time.Now().UTC()
	if code != 0 || len(e.stora.Requests()) != 1 || e.stora.Requests()[0].GrantType != "refresh_token" {
		t.Fatalf("exit %d, %d requests (want 0 and one refresh: the refresh token expires in 20m, within renew_before):\n%s", code, len(e.stora.Requests()), out)
	}
	if !strings.Contains(out, "refresh token expires in") {
		t.Errorf("the log does not say why it was due:\n%s", out)
	}
	creds := e.get("stora/partner")
	stored, err := time.Parse(time.RFC3339, str(creds, "refresh_token_expires_at"))
	if str(creds, "refresh_token") == rt || err != nil || stored.Before(before.Add(20*time.Minute)) || stored.After(after.Add(20*time.Minute)) {
		t.Fatalf("credential secret after the rotation: refresh token replaced %v, refresh_token_expires_at %q (%v), want 20m from the request",
			str(creds, "refresh_token") != rt, str(creds, "refresh_token_expires_at"), err)
	}
	if _, ok := e.get("apps/partner").Data["refresh_token_expires_at"]; ok {
		t.Errorf("the output secret apps read got refresh_token_expires_at")
	}
	if got := lastPush()[metric]; got != float64(stored.Unix()) {
		t.Errorf("pushed %s = %v, want %d", metric, got, stored.Unix())
	}

	// status and validate warn, with what to do, and neither fails for it.
	storedText := stored.Format(time.RFC3339)
	code, out = e.run("status", "--config", cfg, "--output", "json")
	var st struct {
		Targets []struct {
			RefreshTokenExpiresAt *time.Time `json:"refresh_token_expires_at"`
			RefreshTokenWarning   *string    `json:"refresh_token_warning"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || len(st.Targets) != 1 {
		t.Fatalf("status --output json: exit %d, %v:\n%s", code, err, out)
	}
	if row := st.Targets[0]; row.RefreshTokenExpiresAt == nil || !row.RefreshTokenExpiresAt.Equal(stored) ||
		row.RefreshTokenWarning == nil || !strings.Contains(*row.RefreshTokenWarning, "authorize again before "+storedText) {
		t.Errorf("status --output json: want refresh_token_expires_at %s and a warning to authorize again before it:\n%s", storedText, out)
	}
	code, out = e.run("status", "--config", cfg)
	if code != 0 || !strings.Contains(out, "\n    warning: refresh token expires at "+storedText) {
		t.Errorf("status: exit %d, want 0 and a warning line under partner:\n%s", code, out)
	}
	code, out = e.run("validate", "--config", cfg)
	if code != 0 || !strings.Contains(out, "partner: ok\n") || !strings.Contains(out, "partner: warning: refresh token expires at "+storedText) ||
		!strings.Contains(out, "authorize again before "+storedText) {
		t.Errorf("validate: exit %d, want 0, ok and a warning line:\n%s", code, out)
	}

	// The server stops saying: the next rotation (still due: 20m left) removes the stored value.
	e.stora.SetRefreshTokenTTL(0)
	if code, out := e.run("--config", cfg, "--once", "--pushgateway", pg.URL); code != 0 || len(e.stora.Requests()) != 2 {
		t.Fatalf("second run: exit %d, %d requests, want 0 and 2:\n%s", code, len(e.stora.Requests()), out)
	}
	if v, ok := e.get("stora/partner").Data["refresh_token_expires_at"]; ok {
		t.Errorf("refresh_token_expires_at %v kept after a new refresh token came without one", v)
	}
	if got, ok := lastPush()[metric]; ok {
		t.Errorf("pushed %s = %v after the expiry became unknown, want it absent", metric, got)
	}
	code, out = e.run("status", "--config", cfg, "--output", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || st.Targets[0].RefreshTokenExpiresAt != nil || st.Targets[0].RefreshTokenWarning != nil {
		t.Errorf("status --output json after the removal: exit %d, want refresh_token_expires_at and the warning null:\n%s", code, out)
	}
	if code, out = e.run("validate", "--config", cfg); code != 0 || strings.Contains(out, "warning") {
		t.Errorf("validate after the removal: exit %d, want 0 and no warning:\n%s", code, out)
	}
	if code, out := e.run("--config", cfg, "--once"); code != 0 || len(e.stora.Requests()) != 2 {
		t.Errorf("third run: exit %d, %d requests, want 0 and still 2 (nothing due):\n%s", code, len(e.stora.Requests()), out)
	}
}
