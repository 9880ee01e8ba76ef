package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"token-rotator/internal/testenv"
)

func TestDaemonServesMetricsAndProbes(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--log-format", "json", "--metrics-address", "127.0.0.1:0"}, &out, &out)
	}()
	addr := waitFor(t, &out, regexp.MustCompile(`"msg":"serving /metrics[^}]*"address":"([^"]+)"`))
	waitFor(t, &out, regexp.MustCompile(`"msg":"(next pass)"`)) // logged after the pass has returned: /readyz is 200 by then
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz %d after a pass", code)
	}
	_, m := get("/metrics")
	for _, want := range []string{
		`token_rotator_rotations_total{client="acme",grant="client_credentials",result="rotated"} 1`,
		`token_rotator_token_endpoint_responses_total{status="200"} 1`,
		`token_rotator_rotation_duration_seconds_count{grant="client_credentials"} 1`,
		`token_rotator_last_success_timestamp_seconds{client="acme"}`,
		`token_rotator_last_pass_timestamp_seconds`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	exp := regexp.MustCompile(`token_rotator_access_token_expiry_timestamp_seconds\{client="acme"\} (\S+)`).FindStringSubmatch(m)
	var at float64
	if len(exp) == 2 {
		json.Unmarshal([]byte(exp[1]), &at)
	}
	if left := time.Until(time.Unix(int64(at), 0)); left < 119*time.Minute || left > 121*time.Minute {
		t.Errorf("expiry gauge is %v away, want about 2h", left)
	}
	assertNoSecrets(t, m, secret, str(e.get("stora/acme"), "access_token"))
	cancel()
	if err := <-done; err != nil {
		t.Errorf("daemon: %v", err)
	}
}

// TestReadyzWaitsForTheFirstPass holds the first pass's token request until /readyz has been
// asked: it must answer 503 while the pass is in flight, and 200 once it has completed.
func TestReadyzWaitsForTheFirstPass(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
	held, release := make(chan struct{}), make(chan struct{})
	var holdOnce, releaseOnce sync.Once
	e.stora.Intercept = func(http.ResponseWriter, *http.Request) bool {
		holdOnce.Do(func() { close(held); <-release })
		return false
	}
	defer releaseOnce.Do(func() { close(release) }) // before the server's cleanup waits for the request
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--log-format", "json", "--metrics-address", "127.0.0.1:0"}, &out, &out)
	}()
	addr := waitFor(t, &out, regexp.MustCompile(`"msg":"serving /metrics[^}]*"address":"([^"]+)"`))
	status := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatalf("the first pass sent no token request:\n%s", out.String())
	}
	if code := status("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d while the first pass waits on the token endpoint, want 503", code)
	}
	if code := status("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d during the first pass, want 200", code)
	}
	releaseOnce.Do(func() { close(release) })
	waitFor(t, &out, regexp.MustCompile(`"msg":"(next pass)"`)) // logged after the pass has returned
	if code := status("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d after the first pass, want 200", code)
	}
	if e.tokenInfo(str(e.get("stora/acme"), "access_token")) != http.StatusOK {
		t.Errorf("the first pass stored no working token")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("daemon: %v", err)
	}
}

func TestOncePushesToAPushgateway(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var pushed []string
	pg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		pushed = append(pushed, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
	}))
	defer pg.Close()
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
	if code, out := e.run("--config", cfg, "--once", "--pushgateway", pg.URL); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pushed) != 1 || !strings.HasPrefix(pushed[0], "PUT /metrics/job/token_rotator") || !strings.Contains(pushed[0], "token_rotator_rotations_total") {
		t.Errorf("pushed %d times: %.200q", len(pushed), pushed)
	}
	mu.Unlock()
	// A shard pushes to a group of its own, so that shards do not overwrite each other's counts;
	// a dry run pushes nothing.
	if code, out := e.run("--config", cfg, "--once", "--shard", "1/2", "--pushgateway", pg.URL); code != 0 {
		t.Fatalf("sharded run: exit %d:\n%s", code, out)
	}
	if code, out := e.run("--config", cfg, "--dry-run", "--pushgateway", pg.URL); code != 0 {
		t.Fatalf("dry run: exit %d:\n%s", code, out)
	}
	mu.Lock()
	if len(pushed) != 2 || !strings.Contains(strings.SplitN(pushed[1], " ", 3)[1], "1_of_2") {
		t.Errorf("after a sharded run and a dry run: pushed %d times, the second to %.120q; want 2, the second to the shard's group", len(pushed), pushed[len(pushed)-1])
	}
}

func TestStatusAndValidate(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	e.put("stora/stale", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": "r",
		"access_token": "old", "expires_at": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)})
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n    output: apps/acme\n" +
		"  - name: stale\n    grant: authorization_code\n    secret: stora/stale\n")
	if code, out := e.run("--config", cfg, "--once", "--client", "acme"); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out := e.run("status", "--config", cfg, "--output", "json")
	var st struct {
		NextRun time.Time `json:"next_run"`
		Targets []struct {
			Name, Grant, Status  string
			ExpiresAt            time.Time `json:"expires_at"`
			ExpiresBeforeNextRun bool      `json:"expires_before_next_run"`
			LastSuccess          string    `json:"last_success"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &st); err != nil {
		t.Fatalf("status --output json: %v\n%s", err, out)
	}
	if code != 1 || len(st.Targets) != 2 {
		t.Fatalf("exit %d with %d targets, want 1 (stale expires before the next run) and 2:\n%s", code, len(st.Targets), out)
	}
	acme, stale := st.Targets[0], st.Targets[1]
	if acme.Status != "ok" || acme.LastSuccess == "" || acme.ExpiresBeforeNextRun || time.Until(acme.ExpiresAt) < 119*time.Minute {
		t.Errorf("acme: %+v", acme)
	}
	if !stale.ExpiresBeforeNextRun {
		t.Errorf("stale: %+v, want flagged", stale)
	}
	_, table := e.run("status", "--config", cfg)
	if !strings.Contains(table, "EXPIRES BEFORE NEXT RUN") || !strings.Contains(table, "acme") || !strings.Contains(table, "next scheduled run") {
		t.Errorf("status table:\n%s", table)
	}
	assertNoSecrets(t, out+table, secret, str(e.get("apps/acme"), "access_token"))

	// validate: all good with the root token; with a read-only one, a problem per client, and
	// neither asks the token endpoint nor writes anything.
	before, versions := len(e.stora.Requests()), e.get("stora/acme").VersionMetadata.Version
	if code, out := e.run("validate", "--config", cfg); code != 0 || !strings.Contains(out, "acme: ok") || !strings.Contains(out, "stale: ok") {
		t.Errorf("validate: exit %d:\n%s", code, out)
	}
	if err := e.vault.Client.Sys().PutPolicy("ro", `path "secret/data/*" { capabilities = ["read"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := e.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"ro"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_TOKEN", tok.Auth.ClientToken)
	code, out = e.run("validate", "--config", cfg)
	if code != 1 || strings.Count(out, "policy does not allow") != 2 {
		t.Errorf("validate with a read-only token: exit %d:\n%s", code, out)
	}
	if len(e.stora.Requests()) != before || e.get("stora/acme").VersionMetadata.Version != versions {
		t.Errorf("validate asked the token endpoint or wrote to Vault")
	}
}

// operator plays the operator's browser: it reads the authorization URL the command prints,
// checks it, has the fake server issue a code for its PKCE challenge, and answers with the
// redirect URL.
func operator(t *testing.T, e *env, prompt *io.PipeReader, answer *io.PipeWriter, clientID, redirectURI string) {
	defer answer.Close()
	sc := bufio.NewScanner(prompt)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "http") {
			continue
		}
		u, err := url.Parse(line)
		if err != nil {
			t.Error(err)
			return
		}
		q := u.Query()
		if q.Get("client_id") != clientID || q.Get("code_challenge_method") != "S256" || q.Get("redirect_uri") != redirectURI ||
			q.Get("response_type") != "code" || len(q.Get("state")) < 16 || !strings.HasSuffix(u.Path, "/oauth2/authorize") {
			t.Errorf("authorization URL %s", line)
		}
		code := e.stora.IssueCode(clientID, redirectURI, "public.contact:read", q.Get("code_challenge"))
		go io.Copy(io.Discard, prompt) // the command goes on printing while it waits for the answer
		io.WriteString(answer, redirectURI+"?code="+code+"&state="+q.Get("state")+"\n")
		return
	}
}

func TestAuthorizeOnboardsAConnection(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    scope: public.contact:read\n    secret: stora/partner\n    connections: stora/partner/connections\n")
	const redirect = "https://partner.example/callback"

	promptR, promptW := io.Pipe()
	answerR, answerW := io.Pipe()
	go operator(t, e, promptR, answerW, id, redirect)
	var stderr bytes.Buffer
	err := runAuthorize(context.Background(), []string{"--config", cfg, "--client", "partner", "--connection", "operator-1", "--redirect-uri", redirect},
		answerR, promptW, &stderr)
	promptW.Close()
	if err != nil {
		t.Fatalf("authorize: %v\n%s", err, stderr.String())
	}
	conn := e.get("stora/partner/connections/operator-1")
	rt := str(conn, "refresh_token")
	if !e.stora.RefreshTokenValid(rt) || conn.Data["code"] != nil || conn.Data["code_verifier"] != nil || str(conn, "redirect_uri") != redirect {
		t.Errorf("after authorize: refresh token live %v, code left %v, verifier left %v", e.stora.RefreshTokenValid(rt), conn.Data["code"] != nil, conn.Data["code_verifier"] != nil)
	}
	if e.tokenInfo(str(conn, "access_token")) != 200 {
		t.Errorf("the access token does not work")
	}

	// --store-only with --code: stored for the next pass, which exchanges it.
	verifierCode := e.stora.IssueCode(id, redirect, "public.contact:read", "")
	var out bytes.Buffer
	err = runAuthorize(context.Background(), []string{"--config", cfg, "--client", "partner", "--connection", "operator-2", "--redirect-uri", redirect,
		"--code", verifierCode, "--store-only"}, strings.NewReader(""), &out, &stderr)
	if err != nil || !strings.Contains(out.String(), "next pass exchanges it") {
		t.Fatalf("authorize --store-only: %v\n%s", err, out.String())
	}
	if c := e.get("stora/partner/connections/operator-2"); str(c, "code") != verifierCode || c.Data["code_verifier"] != nil {
		t.Errorf("stored: code %v, a verifier %v (a --code from elsewhere has none of ours)", c.Data["code"] != nil, c.Data["code_verifier"] != nil)
	}
	if code, out := e.run("--config", cfg, "--once"); code != 0 {
		t.Fatalf("the next pass: exit %d:\n%s", code, out)
	}
	if c := e.get("stora/partner/connections/operator-2"); !e.stora.RefreshTokenValid(str(c, "refresh_token")) || c.Data["code"] != nil {
		t.Errorf("the next pass did not exchange the stored code")
	}
	assertNoSecrets(t, out.String()+stderr.String(), secret, rt, verifierCode)

	// A refused code on a connection that already works: the code goes, the refresh token stays.
	before := str(e.get("stora/partner/connections/operator-1"), "refresh_token")
	out.Reset()
	err = runAuthorize(context.Background(), []string{"--config", cfg, "--client", "partner", "--connection", "operator-1", "--redirect-uri", redirect,
		"--code", "a-code-the-server-never-issued"}, strings.NewReader(""), &out, &stderr)
	if code := exitCode(err, &stderr); code != 1 { // README: exit 1, not authorized
		t.Fatalf("a refused code: exit %d, want 1:\n%s", code, out.String())
	}
	if c := e.get("stora/partner/connections/operator-1"); c.Data["code"] != nil || str(c, "refresh_token") != before {
		t.Errorf("after a refused code: code left %v, refresh token kept %v", c.Data["code"] != nil, str(c, "refresh_token") == before)
	}
	if code, out := e.run("--config", cfg, "--once", "--force", "--client", "partner"); code != 0 {
		t.Errorf("the stored refresh token no longer works after a refused code: exit %d\n%s", code, out)
	}
}

func TestAuthorizeRefusesAForeignState(t *testing.T) {
	if _, err := codeFrom("https://p.example/cb?code=abc&state=theirs", "ours"); err == nil {
		t.Errorf("a redirect URL with another state was accepted")
	}
	if c, err := codeFrom("https://p.example/cb?code=abc&state=ours", "ours"); err != nil || c != "abc" {
		t.Errorf("codeFrom = %q, %v", c, err)
	}
	if _, err := codeFrom("https://p.example/cb?error=access_denied&state=ours", "ours"); err == nil {
		t.Errorf("a refusal was taken for a code")
	}
}

// waitFor waits until out matches re and returns the first group.
func waitFor(t *testing.T, out *testenv.SyncBuffer, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s in:\n%s", re, out.String())
	return ""
}

// TestStuckClientIsPushedForItsAlerts: a --once run with --pushgateway pushes, for a client whose
// refresh token the server refuses, token_rotator_reauthorization_required 1 and the expiry of
// the access token still in Vault (what the TokenRotatorReauthorizationRequired and
// ...ExpiringSoon alerts read), on the run that finds it and on the next, which does not try it;
// once a new code is stored and exchanged, the run pushes 0.
func TestStuckClientIsPushedForItsAlerts(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var pushed []map[string]float64 // each push: `name{client="..."}` to its value
	pg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		values := map[string]float64{}
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err != nil {
				break
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "client" {
						values[fmt.Sprintf("%s{client=%q}", mf.GetName(), l.GetValue())] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
					}
				}
			}
		}
		mu.Lock()
		pushed = append(pushed, values)
		mu.Unlock()
	}))
	defer pg.Close()
	last := func() map[string]float64 {
		mu.Lock()
		defer mu.Unlock()
		if len(pushed) == 0 {
			return nil
		}
		return pushed[len(pushed)-1]
	}
	id, secret := e.stora.AddClient()
	expires := time.Now().Add(10 * time.Minute).UTC().Truncate(time.Second)
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": "never-issued"})
	e.put("apps/partner", map[string]any{"access_token": "still-working", "token_type": "Bearer", "expires_at": expires.Format(time.RFC3339)})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: stora/partner\n    output: apps/partner\n")
	const (
		reauth = `token_rotator_reauthorization_required{client="partner"}`
		expiry = `token_rotator_access_token_expiry_timestamp_seconds{client="partner"}`
	)
	for run := 1; run <= 2; run++ {
		if code, out := e.run("--config", cfg, "--once", "--pushgateway", pg.URL); code != 1 {
			t.Fatalf("run %d: exit %d, want 1 (re-authorization required):\n%s", run, code, out)
		}
		if got := last(); got[reauth] != 1 || got[expiry] != float64(expires.Unix()) {
			t.Errorf("run %d pushed %s = %v and %s = %v; want 1 and %d", run, reauth, got[reauth], expiry, got[expiry], expires.Unix())
		}
	}
	const redirect = "https://partner.example/callback"
	data := e.get("stora/partner").Data
	data["code"], data["redirect_uri"] = e.stora.IssueCode(id, redirect, "public.contact:read", ""), redirect
	e.put("stora/partner", data)
	if code, out := e.run("--config", cfg, "--once", "--pushgateway", pg.URL); code != 0 {
		t.Fatalf("after a new code: exit %d:\n%s", code, out)
	}
	if got, ok := last()[reauth]; !ok || got != 0 {
		t.Errorf("after a new code was exchanged, pushed %s = %v (present: %v); want 0", reauth, got, ok)
	}
}
