//go:build unix

package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Doorkeeper is a running real Doorkeeper token server: Rails 6.1 + Doorkeeper 5.5 from the Debian
// packages (scripts/doorkeeper-deps installs them), internal/doorkeeper/server/app.rb, with a SQLite
// file in the test's temporary directory. Its token endpoint is the one Stora runs.
type Doorkeeper struct {
	// BaseURL is its http://127.0.0.1:PORT address.
	BaseURL string
	// TokenURL is BaseURL + "/oauth2/token".
	TokenURL string
	// InfoURL is BaseURL + "/oauth2/token/info".
	InfoURL string
	// APIURL is BaseURL + "/api/contacts", a protected resource standing in for the Stora Public
	// API: GET with "Authorization: Bearer <access_token>" answers 200 JSON for a live token with
	// scope public.contact:read, and Doorkeeper's 401 (WWW-Authenticate: Bearer ...,
	// error="invalid_token") for a missing, unknown, revoked or expired one. Like InfoURL, the first
	// use of a refreshed access token there revokes, in the revoke-on-use mode, the refresh token
	// it replaced and the access token issued with that.
	APIURL string
	// Options are the options it was started with.
	Options DoorkeeperOptions

	out *SyncBuffer
}

// DoorkeeperOptions choose Doorkeeper's behaviour.
type DoorkeeperOptions struct {
	// RevokeImmediately drops the previous_refresh_token column, so a used refresh token is revoked
	// at once. Otherwise (Doorkeeper's stock schema) it is revoked when the access token issued with
	// it is first used, e.g. at /oauth2/token/info.
	RevokeImmediately bool
	// ReuseAccessToken turns on Doorkeeper's reuse_access_token.
	ReuseAccessToken bool
}

// doorkeeperRequires is what app.rb needs; "rails" must come before "doorkeeper".
const doorkeeperRequires = `require "rails"; require "doorkeeper"; require "sqlite3"; require "webrick"; require "rack/handler/webrick"`

var (
	doorkeeperCheckOnce sync.Once
	doorkeeperCheckErr  error
)

// RequireDoorkeeper returns the path of app.rb, or ends the test when the server cannot run here:
// skipped with the reason, or failed when CI=true, where a skipped suite would pass unseen. It
// installs nothing; scripts/doorkeeper-deps does.
func RequireDoorkeeper(tb testing.TB) string {
	tb.Helper()
	app, err := doorkeeperApp()
	if err == nil {
		doorkeeperCheckOnce.Do(func() {
			ruby, lerr := exec.LookPath("ruby")
			if lerr != nil {
				doorkeeperCheckErr = fmt.Errorf("no ruby on PATH")
				return
			}
			out, rerr := exec.Command(ruby, "-e", doorkeeperRequires).CombinedOutput()
			if rerr != nil {
				doorkeeperCheckErr = fmt.Errorf("ruby cannot load rails/doorkeeper/sqlite3/webrick: %v: %s",
					rerr, firstLines(string(out), 3))
			}
		})
		err = doorkeeperCheckErr
	}
	if err != nil {
		unavailable(tb, "real Doorkeeper server unavailable (run scripts/doorkeeper-deps as root): "+err.Error())
	}
	return app
}

// doorkeeperApp finds internal/doorkeeper/server/app.rb: $DOORKEEPER_APP, next to this source file,
// or under the module root above the working directory.
func doorkeeperApp() (string, error) {
	if p := os.Getenv("DOORKEEPER_APP"); p != "" {
		return p, nil
	}
	var candidates []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		candidates = append(candidates, filepath.Join(filepath.Dir(file), "..", "doorkeeper", "server", "app.rb"))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				candidates = append(candidates, filepath.Join(dir, "internal", "doorkeeper", "server", "app.rb"))
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return filepath.Clean(c), nil
		}
	}
	return "", fmt.Errorf("internal/doorkeeper/server/app.rb not found (looked at %q)", candidates)
}

var listeningRE = regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`)

// StartDoorkeeper starts the real Doorkeeper server on a loopback port, waits until it answers, and
// kills it (its whole process group) when the test ends. The server binds port 0 and reports the
// port the kernel gave it, so parallel starts cannot race for a port.
func StartDoorkeeper(tb testing.TB, opts DoorkeeperOptions) *Doorkeeper {
	tb.Helper()
	app := RequireDoorkeeper(tb)
	dir := tb.TempDir()
	mode := "on_use"
	if opts.RevokeImmediately {
		mode = "immediate"
	}
	reuse := "0"
	if opts.ReuseAccessToken {
		reuse = "1"
	}
	d := &Doorkeeper{Options: opts, out: &SyncBuffer{}}
	cmd := exec.Command("ruby", app)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"DOORKEEPER_PORT=0",
		"DOORKEEPER_DB="+filepath.Join(dir, "doorkeeper.sqlite3"),
		"DOORKEEPER_REVOKE_MODE="+mode,
		"DOORKEEPER_REUSE_ACCESS_TOKEN="+reuse,
		"RUBYOPT=", "BUNDLE_GEMFILE=",
		fmt.Sprintf("DOORKEEPER_PARENT_PID=%d", os.Getpid()),
	)
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start doorkeeper: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})

	deadline := time.After(60 * time.Second)
	for {
		if d.BaseURL == "" {
			if m := listeningRE.FindStringSubmatch(d.out.String()); m != nil {
				d.BaseURL = m[1]
				d.TokenURL = d.BaseURL + "/oauth2/token"
				d.InfoURL = d.BaseURL + "/oauth2/token/info"
				d.APIURL = d.BaseURL + "/api/contacts"
			}
		}
		if d.BaseURL != "" {
			resp, err := testHTTP.Get(d.BaseURL + "/test/health")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					tb.Logf("doorkeeper (revoke %s, reuse_access_token %v) up at %s in %v",
						mode, opts.ReuseAccessToken, d.BaseURL, time.Since(start).Round(time.Millisecond))
					return d
				}
			}
		}
		select {
		case <-exited:
			tb.Fatalf("doorkeeper server exited before answering:\n%s", d.out.String())
		case <-deadline:
			tb.Fatalf("doorkeeper server did not answer within 60s:\n%s", d.out.String())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Output returns what the server printed so far.
func (d *Doorkeeper) Output() string { return d.out.String() }

// AddClient registers a confidential application with the given redirect URI (empty: a loopback
// default) and space-separated scopes (empty: none, so any configured scope), and returns its
// client_id and plaintext client_secret.
func (d *Doorkeeper) AddClient(tb testing.TB, redirectURI, scopes string) (id, secret string) {
	tb.Helper()
	var r struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	d.setup(tb, "/test/clients", map[string]any{"redirect_uri": redirectURI, "scopes": scopes}, &r)
	return r.ClientID, r.ClientSecret
}

// IssueCode creates an authorization code for clientID as the authorize endpoint would after an
// operator consents (resource owner 1, expires in 600 s). challenge is a PKCE S256 code_challenge,
// or empty for none. An empty scope means the application's scopes, else the default scope.
func (d *Doorkeeper) IssueCode(tb testing.TB, clientID, redirectURI, scope, challenge string) string {
	tb.Helper()
	var r struct {
		Code string `json:"code"`
	}
	body := map[string]any{"client_id": clientID, "redirect_uri": redirectURI, "scope": scope}
	if challenge != "" {
		body["code_challenge"], body["code_challenge_method"] = challenge, "S256"
	}
	d.setup(tb, "/test/codes", body, &r)
	return r.Code
}

// IssueTokenPair creates an access token (2 hours) and refresh token for clientID, as an earlier
// authorization would have.
func (d *Doorkeeper) IssueTokenPair(tb testing.TB, clientID, scope string) (accessToken, refreshToken string) {
	tb.Helper()
	var r struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	d.setup(tb, "/test/tokens", map[string]any{"client_id": clientID, "scope": scope}, &r)
	return r.AccessToken, r.RefreshToken
}

// RevokeRefreshToken revokes the token row that holds refreshToken (its access token with it), as
// an operator revoking the integration would.
func (d *Doorkeeper) RevokeRefreshToken(tb testing.TB, refreshToken string) {
	tb.Helper()
	d.setup(tb, "/test/revoke", map[string]any{"refresh_token": refreshToken}, nil)
}

// RefreshTokenRevoked reports whether refreshToken is unknown or revoked, without using it.
func (d *Doorkeeper) RefreshTokenRevoked(tb testing.TB, refreshToken string) bool {
	tb.Helper()
	var r struct {
		Revoked bool `json:"revoked"`
	}
	d.setup(tb, "/test/refresh_token", map[string]any{"refresh_token": refreshToken}, &r)
	return r.Revoked
}

// TokenInfo calls GET /oauth2/token/info with accessToken and returns the HTTP status. In the
// revoke-on-use mode, the first use of a refreshed access token revokes the refresh token it
// replaced.
func (d *Doorkeeper) TokenInfo(tb testing.TB, accessToken string) int {
	tb.Helper()
	return tokenInfo(tb, d.InfoURL, accessToken)
}

// CallAPI calls GET APIURL with accessToken and returns the HTTP status.
func (d *Doorkeeper) CallAPI(tb testing.TB, accessToken string) int {
	tb.Helper()
	return tokenInfo(tb, d.APIURL, accessToken)
}

// DoorkeeperRequest is one request the server saw at POST /oauth2/token.
type DoorkeeperRequest struct {
	GrantType string `json:"grant_type"`
	Status    int    `json:"status"`
}

// TokenRequests returns how many POST /oauth2/token requests the server has seen, or -1 when it
// cannot tell.
func (d *Doorkeeper) TokenRequests() int {
	reqs, err := d.tokenRequests()
	if err != nil {
		return -1
	}
	return len(reqs)
}

// TokenRequestLog returns every POST /oauth2/token request the server has seen, in order.
func (d *Doorkeeper) TokenRequestLog(tb testing.TB) []DoorkeeperRequest {
	tb.Helper()
	reqs, err := d.tokenRequests()
	if err != nil {
		tb.Fatal(err)
	}
	return reqs
}

func (d *Doorkeeper) tokenRequests() ([]DoorkeeperRequest, error) {
	resp, err := testHTTP.Get(d.BaseURL + "/test/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Requests []DoorkeeperRequest `json:"requests"`
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("doorkeeper /test/stats: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	return r.Requests, nil
}

// setup POSTs a JSON body to a set-up route and decodes the answer into out (when not nil).
func (d *Doorkeeper) setup(tb testing.TB, path string, body map[string]any, out any) {
	tb.Helper()
	postSetup(tb, "doorkeeper", d.BaseURL+path, body, out, d.out.String)
}

// postSetup POSTs body as JSON to a test server's set-up route url and decodes the answer into
// out (when not nil); a failure ends the test with the server's own output (logs).
func postSetup(tb testing.TB, server, url string, body map[string]any, out any, logs func() string) {
	tb.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := testHTTP.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", server, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("%s %s: %s: %s\n%s", server, url, resp.Status, data, logs())
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			tb.Fatalf("%s %s: %v", server, url, err)
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(strings.TrimSpace(s), "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
