//go:build unix

package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
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

// OIDCProvider is a running oidc-provider (the npm package, version pinned in
// internal/testenv/oidcprovider/package.json) configured by internal/testenv/oidcprovider/server.mjs:
// the second real authorization server of the tests, independent of Doorkeeper. It speaks RFC 6749
// as oidc-provider does, not Stora's contract: form bodies only, refresh tokens rotated and retired
// at their first use, access tokens checked by RFC 7662 introspection.
//
// A test uses it directly or as a TokenServer:
//
//	p := testenv.StartOIDCProvider(t, testenv.OIDCProviderOptions{})
//	id, secret := p.AddClientWith(t, testenv.OIDCClient{AuthMethod: "client_secret_basic"})
//	_, rt := p.IssueTokenPair(t, id, "public.contact:read") // drives /auth and its interactions
//	// point the job at p.TokenURL (or issuer: p.BaseURL) with form encoding, then
//	if !p.RefreshTokenRevoked(t, rt) { ... } // the job rotated it
//
// or srv := testenv.StartTokenServer(t, "oidc-provider", true). It has no revoke-on-use mode and no
// reuse_access_token: asking for either fails the test.
type OIDCProvider struct {
	// BaseURL is its http://127.0.0.1:PORT address, also its issuer.
	BaseURL string
	// TokenURL, AuthURL, IntrospectionURL and RevocationURL are its endpoints.
	TokenURL, AuthURL, IntrospectionURL, RevocationURL string
	// Options are the options it was started with, defaults filled in.
	Options OIDCProviderOptions

	operatorSecret string
	out            *SyncBuffer
	mu             sync.Mutex
	clients        map[string]OIDCClient
}

// OIDCProviderOptions configure StartOIDCProvider. Zero values take the defaults.
type OIDCProviderOptions struct {
	// AccessTokenTTL is the lifetime of access tokens from the code and refresh grants (default
	// 120 s); ClientCredentialsTTL that of client-credentials tokens (120 s); RefreshTokenTTL that
	// of refresh tokens (600 s). Whole seconds.
	AccessTokenTTL, ClientCredentialsTTL, RefreshTokenTTL time.Duration
	// Scopes are the scopes it knows besides openid and offline_access (default: the conformance
	// tests' public.contact:read, public.contact:write, public.invoice:read). It drops a
	// requested scope it does not know, and rejects one it knows but the client was not given.
	Scopes []string
}

// OIDCClient is a client to register. Zero values take the defaults.
type OIDCClient struct {
	// RedirectURI is its one redirect URI (default http://localhost:8765/callback).
	RedirectURI string
	// Scopes are the space-separated scopes it may be given (empty: any the server knows).
	Scopes string
	// AuthMethod is its token_endpoint_auth_method: client_secret_post (the default),
	// client_secret_basic, or none (a public client: no secret, PKCE required).
	AuthMethod string
	// ID and Secret are its client_id and client_secret (default: random ones).
	ID, Secret string

	secret string
}

// oidcProviderDirEnv names a directory holding package.json, package-lock.json and server.mjs, to
// use instead of internal/testenv/oidcprovider.
const oidcProviderDirEnv = "OIDC_PROVIDER_DIR"

var oidcInstall struct {
	once sync.Once
	dir  string // the cache directory holding node_modules
	err  error
}

// RequireOIDCProvider installs oidc-provider once per machine and returns the cache directory
// holding its node_modules, or ends the test when it cannot run here: skipped with the reason, or
// failed when CI=true.
//
// The install is `npm ci` from the pinned package-lock.json (which names no registry: npm uses
// its configured one) into $TOKEN_ROTATOR_CACHE (else ~/.cache/token-rotator)
// /oidc-provider-VERSION-HASH, HASH a digest of the lock file, so a changed lock file gets a
// fresh install. It installs into a temporary directory beside it and renames that into place,
// so a half-finished install is never used and concurrent test binaries cannot collide.
func RequireOIDCProvider(tb testing.TB) (installDir, srcDir string) {
	tb.Helper()
	src, err := oidcProviderSource()
	if err == nil {
		oidcInstall.once.Do(func() { oidcInstall.dir, oidcInstall.err = installOIDCProvider(src) })
		err = oidcInstall.err
	}
	if err != nil {
		unavailable(tb, "real oidc-provider server unavailable (needs node and npm on PATH): "+err.Error())
	}
	return oidcInstall.dir, src
}

// oidcProviderSource finds internal/testenv/oidcprovider: $OIDC_PROVIDER_DIR, next to this source
// file, or under the module root above the working directory.
func oidcProviderSource() (string, error) {
	if p := os.Getenv(oidcProviderDirEnv); p != "" {
		return p, nil
	}
	var candidates []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		candidates = append(candidates, filepath.Join(filepath.Dir(file), "oidcprovider"))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				candidates = append(candidates, filepath.Join(dir, "internal", "testenv", "oidcprovider"))
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	for _, c := range candidates {
		if _, err := os.Stat(filepath.Join(c, "server.mjs")); err == nil {
			return filepath.Clean(c), nil
		}
	}
	return "", fmt.Errorf("internal/testenv/oidcprovider/server.mjs not found (looked in %q)", candidates)
}

func installOIDCProvider(src string) (string, error) {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("no %s on PATH", tool)
		}
	}
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		return "", err
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(src, "package.json"))
	if err == nil {
		err = json.Unmarshal(b, &pkg)
	}
	if err != nil {
		return "", fmt.Errorf("package.json: %v", err)
	}
	version := pkg.Dependencies["oidc-provider"]
	if version == "" {
		return "", errors.New("package.json has no oidc-provider dependency")
	}
	cache := os.Getenv("TOKEN_ROTATOR_CACHE")
	if cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(dir, "token-rotator")
	}
	sum := sha256.Sum256(lock)
	dir := filepath.Join(cache, "oidc-provider-"+version+"-"+hex.EncodeToString(sum[:6]))
	marker := filepath.Join(dir, "node_modules", "oidc-provider", "package.json")
	if _, err := os.Stat(marker); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, ".oidc-provider-install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // after a successful rename there is nothing left there
	for _, f := range []string{"package.json", "package-lock.json", ".npmrc"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(tmp, f), b, 0o644); err != nil {
			return "", err
		}
	}
	// A stalled network ends in a clear reason within minutes, not in go test's own timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("no answer in 5 minutes: %w", err)
		}
		return "", fmt.Errorf("npm ci: %v: %s", err, firstLines(string(out), 5))
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another test binary finished the same install first: use that one.
		if _, serr := os.Stat(marker); serr == nil {
			return dir, nil
		}
		return "", err
	}
	return dir, nil
}

// StartOIDCProvider starts oidc-provider on a loopback port, waits until its discovery document
// answers, and kills it when the test ends. The server binds port 0 and reports the port the
// kernel gave it, so parallel starts cannot race for a port.
func StartOIDCProvider(tb testing.TB, opts OIDCProviderOptions) *OIDCProvider {
	tb.Helper()
	install, src := RequireOIDCProvider(tb)
	if opts.AccessTokenTTL == 0 {
		opts.AccessTokenTTL = 120 * time.Second
	}
	if opts.ClientCredentialsTTL == 0 {
		opts.ClientCredentialsTTL = 120 * time.Second
	}
	if opts.RefreshTokenTTL == 0 {
		opts.RefreshTokenTTL = 600 * time.Second
	}
	if opts.Scopes == nil {
		opts.Scopes = []string{"public.contact:read", "public.contact:write", "public.invoice:read"}
	}
	// server.mjs runs from the test's directory beside a link to the cached node_modules: ES
	// modules resolve packages from the importing file's directory up, never from NODE_PATH.
	dir := tb.TempDir()
	script, err := os.ReadFile(filepath.Join(src, "server.mjs"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.mjs"), script, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(install, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
		tb.Fatal(err)
	}
	cfg, err := json.Marshal(map[string]any{
		"ttl": map[string]int{
			"AccessToken":       int(opts.AccessTokenTTL / time.Second),
			"ClientCredentials": int(opts.ClientCredentialsTTL / time.Second),
			"RefreshToken":      int(opts.RefreshTokenTTL / time.Second),
		},
		"scopes": opts.Scopes,
	})
	if err != nil {
		tb.Fatal(err)
	}
	p := &OIDCProvider{Options: opts, out: &SyncBuffer{}, operatorSecret: rand.Text(), clients: map[string]OIDCClient{}}
	cmd := exec.Command("node", filepath.Join(dir, "server.mjs"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"OIDCP_PORT=0",
		"OIDCP_CONFIG="+string(cfg),
		"OIDCP_OPERATOR_SECRET="+p.operatorSecret,
		fmt.Sprintf("OIDCP_PARENT_PID=%d", os.Getpid()),
		"NODE_ENV=test", "NODE_OPTIONS=",
	)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	dieWithTest(cmd)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start oidc-provider: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	})
	deadline := time.After(60 * time.Second)
	for {
		if p.BaseURL == "" {
			if m := oidcListeningRE.FindStringSubmatch(p.out.String()); m != nil {
				p.BaseURL = m[1]
			}
		}
		if p.BaseURL != "" && p.discover() == nil {
			tb.Logf("oidc-provider up at %s in %v", p.BaseURL, time.Since(start).Round(time.Millisecond))
			return p
		}
		select {
		case <-exited:
			tb.Fatalf("oidc-provider exited before answering:\n%s", p.out.String())
		case <-deadline:
			tb.Fatalf("oidc-provider did not answer within 60s:\n%s", p.out.String())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

var oidcListeningRE = regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`)

// discover reads the discovery document and sets the endpoint URLs from it.
func (p *OIDCProvider) discover() error {
	resp, err := testHTTP.Get(p.BaseURL + "/.well-known/openid-configuration")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("discovery: %s", resp.Status)
	}
	var d struct {
		Issuer        string `json:"issuer"`
		Token         string `json:"token_endpoint"`
		Authorization string `json:"authorization_endpoint"`
		Introspection string `json:"introspection_endpoint"`
		Revocation    string `json:"revocation_endpoint"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return err
	}
	if d.Issuer != p.BaseURL || d.Token == "" || d.Authorization == "" || d.Introspection == "" || d.Revocation == "" {
		return fmt.Errorf("discovery document incomplete: %+v", d)
	}
	p.TokenURL, p.AuthURL, p.IntrospectionURL, p.RevocationURL = d.Token, d.Authorization, d.Introspection, d.Revocation
	return nil
}

// Output returns what the server printed so far.
func (p *OIDCProvider) Output() string { return p.out.String() }

// AddClient registers a confidential client_secret_post client (see AddClientWith).
func (p *OIDCProvider) AddClient(tb testing.TB, redirectURI, scopes string) (id, secret string) {
	tb.Helper()
	return p.AddClientWith(tb, OIDCClient{RedirectURI: redirectURI, Scopes: scopes})
}

// AddClientWith registers a client allowed the authorization_code and refresh_token grants (and
// client_credentials unless public) and returns its client_id and client_secret ("" for
// AuthMethod none).
func (p *OIDCProvider) AddClientWith(tb testing.TB, c OIDCClient) (id, secret string) {
	tb.Helper()
	if c.RedirectURI == "" {
		c.RedirectURI = "http://localhost:8765/callback"
	}
	if c.AuthMethod == "" {
		c.AuthMethod = "client_secret_post"
	}
	var r struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	p.setup(tb, "/test/clients", map[string]any{
		"redirect_uri": c.RedirectURI, "scopes": c.Scopes, "token_endpoint_auth_method": c.AuthMethod,
		"client_id": c.ID, "client_secret": c.Secret,
	}, &r)
	c.secret = r.ClientSecret
	p.mu.Lock()
	p.clients[r.ClientID] = c
	p.mu.Unlock()
	return r.ClientID, r.ClientSecret
}

func (p *OIDCProvider) client(tb testing.TB, id string) OIDCClient {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.clients[id]
	if !ok {
		tb.Fatalf("oidc-provider: client %q was not added by this test", id)
	}
	return c
}

// IssueCode drives the authorization endpoint as a browser would, over HTTP: GET /auth, the
// login and consent interactions (oidc-provider's development interactions; any login is
// accepted), and returns the code from the redirect to redirectURI, which it does not follow.
// challenge is a PKCE S256 code_challenge, or empty for none (a public client needs one). An
// empty scope asks for the client's scopes.
func (p *OIDCProvider) IssueCode(tb testing.TB, clientID, redirectURI, scope, challenge string) string {
	tb.Helper()
	if scope == "" {
		scope = p.client(tb, clientID).Scopes
	}
	q := url.Values{"client_id": {clientID}, "redirect_uri": {redirectURI}, "response_type": {"code"},
		"scope": {scope}, "state": {rand.Text()}}
	if challenge != "" {
		q.Set("code_challenge", challenge)
		q.Set("code_challenge_method", "S256")
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	browser := &http.Client{Timeout: testHTTP.Timeout, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next, _ := url.Parse(p.AuthURL + "?" + q.Encode())
	method, form := http.MethodGet, url.Values(nil)
	for step := 0; step < 10; step++ {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, next.String(), body)
		if err != nil {
			tb.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := browser.Do(req)
		if err != nil {
			tb.Fatalf("oidc-provider authorization, %s %s: %v", method, next.Path, err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusSeeOther || resp.StatusCode == http.StatusFound:
			loc, err := next.Parse(resp.Header.Get("Location"))
			if err != nil {
				tb.Fatal(err)
			}
			if strings.HasPrefix(loc.String(), redirectURI) {
				if e := loc.Query().Get("error"); e != "" {
					tb.Fatalf("oidc-provider authorization: %s: %s", e, loc.Query().Get("error_description"))
				}
				if loc.Query().Get("state") != q.Get("state") {
					tb.Fatalf("oidc-provider authorization: state not returned")
				}
				code := loc.Query().Get("code")
				if code == "" {
					tb.Fatalf("oidc-provider authorization: no code in the redirect")
				}
				return code
			}
			next, method, form = loc, http.MethodGet, nil
		case resp.StatusCode == http.StatusOK && strings.HasPrefix(next.Path, "/interaction/"):
			// The development interactions' pages: a login form, then a consent form, each
			// posting back to the same URL.
			if bytes.Contains(page, []byte(`name="prompt" value="login"`)) {
				form = url.Values{"prompt": {"login"}, "login": {"operator"}, "password": {"any"}}
			} else {
				form = url.Values{"prompt": {"consent"}}
			}
			method = http.MethodPost
		default:
			tb.Fatalf("oidc-provider authorization, %s %s: %s: %s\n%s", method, next.Path, resp.Status,
				firstLines(string(page), 5), p.out.String())
		}
	}
	tb.Fatal("oidc-provider authorization: no code after 10 steps")
	return ""
}

// IssueTokenPair creates an access and refresh token for clientID by an authorization (with PKCE)
// and the code's exchange at the token endpoint, authenticated as the client was registered.
func (p *OIDCProvider) IssueTokenPair(tb testing.TB, clientID, scope string) (accessToken, refreshToken string) {
	tb.Helper()
	c := p.client(tb, clientID)
	verifier := rand.Text() + rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	code := p.IssueCode(tb, clientID, c.RedirectURI, scope, base64.RawURLEncoding.EncodeToString(sum[:]))
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {c.RedirectURI}, "code_verifier": {verifier}}
	status, body := p.tokenRequest(tb, clientID, form, true)
	if status != http.StatusOK {
		tb.Fatalf("oidc-provider code exchange: %d %v", status, body["error"])
	}
	at, _ := body["access_token"].(string)
	rt, _ := body["refresh_token"].(string)
	if at == "" || rt == "" {
		tb.Fatalf("oidc-provider code exchange: no access or refresh token")
	}
	return at, rt
}

// TokenRequest POSTs form to the token endpoint with clientID's credentials, sent as the client
// was registered (AuthMethod), and returns the status and decoded JSON body.
func (p *OIDCProvider) TokenRequest(tb testing.TB, clientID string, form url.Values) (int, map[string]any) {
	tb.Helper()
	return p.tokenRequest(tb, clientID, form, false)
}

// harnessHeader marks the harness's own token requests (IssueTokenPair's exchange), which
// /test/stats leaves out: TokenRequests counts what the code under test sent, as Doorkeeper's,
// whose set-up routes write tokens without the endpoint, does.
const harnessHeader = "X-Test-Harness"

func (p *OIDCProvider) tokenRequest(tb testing.TB, clientID string, form url.Values, harness bool) (int, map[string]any) {
	tb.Helper()
	c := p.client(tb, clientID)
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	req, err := http.NewRequest(http.MethodPost, p.TokenURL, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if harness {
		req.Header.Set(harnessHeader, "1")
	}
	switch c.AuthMethod {
	case "client_secret_basic":
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(c.secret))
	case "client_secret_post":
		f.Set("client_id", clientID)
		f.Set("client_secret", c.secret)
	default:
		f.Set("client_id", clientID)
	}
	return p.postForm(tb, req, f)
}

func (p *OIDCProvider) postForm(tb testing.TB, req *http.Request, form url.Values) (int, map[string]any) {
	tb.Helper()
	req.Body = io.NopCloser(strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := testHTTP.Do(req)
	if err != nil {
		tb.Fatalf("oidc-provider %s: %v", req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if len(data) > 0 {
		if err := json.Unmarshal(data, &body); err != nil {
			tb.Fatalf("oidc-provider %s: %s: not JSON", req.URL.Path, resp.Status)
		}
	}
	return resp.StatusCode, body
}

// operator sends form to url authenticated as the test-operator client, which may introspect and
// revoke any client's tokens.
func (p *OIDCProvider) operator(tb testing.TB, url string, form url.Values) (int, map[string]any) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.SetBasicAuth("test-operator", p.operatorSecret)
	return p.postForm(tb, req, form)
}

// RevokeRefreshToken revokes refreshToken at the RFC 7009 revocation endpoint, as an operator
// revoking the integration would. oidc-provider revokes the whole grant with it: the access
// tokens issued under it too.
func (p *OIDCProvider) RevokeRefreshToken(tb testing.TB, refreshToken string) {
	tb.Helper()
	st, body := p.operator(tb, p.RevocationURL, url.Values{"token": {refreshToken}, "token_type_hint": {"refresh_token"}})
	if st != http.StatusOK {
		tb.Fatalf("oidc-provider revocation: %d %v", st, body["error"])
	}
}

// introspect reports whether RFC 7662 introspection calls token active.
func (p *OIDCProvider) introspect(tb testing.TB, token, hint string) bool {
	tb.Helper()
	st, body := p.operator(tb, p.IntrospectionURL, url.Values{"token": {token}, "token_type_hint": {hint}})
	if st != http.StatusOK {
		tb.Fatalf("oidc-provider introspection: %d %v", st, body["error"])
	}
	active, _ := body["active"].(bool)
	return active
}

// RefreshTokenRevoked reports whether introspection calls refreshToken inactive (unknown,
// consumed by a refresh, revoked or expired), without using it.
func (p *OIDCProvider) RefreshTokenRevoked(tb testing.TB, refreshToken string) bool {
	tb.Helper()
	return !p.introspect(tb, refreshToken, "refresh_token")
}

// TokenInfo stands in for Doorkeeper's /oauth2/token/info, which oidc-provider has not: it
// introspects accessToken (RFC 7662) and returns 200 when it is active, 401 when not, the
// statuses a protected resource would answer.
func (p *OIDCProvider) TokenInfo(tb testing.TB, accessToken string) int {
	tb.Helper()
	if p.introspect(tb, accessToken, "access_token") {
		return http.StatusOK
	}
	return http.StatusUnauthorized
}

// OIDCRequest is one request the server saw at its token endpoint.
type OIDCRequest struct {
	GrantType string `json:"grant_type"`
	Status    int    `json:"status"`
	// Auth is how the client authenticated: "basic" (an Authorization header), "post" (a
	// client_secret in the body) or "none".
	Auth string `json:"auth"`
}

// TokenRequestLog returns every POST to the token endpoint the server has seen, in order, but for
// the harness's own (IssueTokenPair's code exchange).
func (p *OIDCProvider) TokenRequestLog(tb testing.TB) []OIDCRequest {
	tb.Helper()
	resp, err := testHTTP.Get(p.BaseURL + "/test/stats")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("oidc-provider /test/stats: %s", resp.Status)
	}
	var r struct {
		Requests []OIDCRequest `json:"requests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		tb.Fatal(err)
	}
	return r.Requests
}

// setup POSTs a JSON body to a test-only route and decodes the answer into out.
func (p *OIDCProvider) setup(tb testing.TB, path string, body map[string]any, out any) {
	tb.Helper()
	postSetup(tb, "oidc-provider", p.BaseURL+path, body, out, p.out.String)
}

// AsTokenServer is p as a TokenServer whose AddClient registers clients that authenticate with
// authMethod (client_secret_post when empty), named "oidc-provider/<authMethod>".
func (p *OIDCProvider) AsTokenServer(authMethod string) TokenServer {
	return oidcProviderServer{p, authMethod}
}

type oidcProviderServer struct {
	p          *OIDCProvider
	authMethod string
}

func (o oidcProviderServer) Name() string {
	if o.authMethod != "" {
		return "oidc-provider/" + o.authMethod
	}
	return "oidc-provider/" + modeName(true)
}
func (o oidcProviderServer) Endpoint() string         { return o.p.TokenURL }
func (o oidcProviderServer) Base() string             { return o.p.BaseURL }
func (o oidcProviderServer) RevokesImmediately() bool { return true }
func (o oidcProviderServer) AddClient(tb testing.TB, redirectURI, scopes string) (string, string) {
	return o.p.AddClientWith(tb, OIDCClient{RedirectURI: redirectURI, Scopes: scopes, AuthMethod: o.authMethod})
}
func (o oidcProviderServer) IssueCode(tb testing.TB, clientID, redirectURI, scope, challenge string) string {
	return o.p.IssueCode(tb, clientID, redirectURI, scope, challenge)
}
func (o oidcProviderServer) IssueTokenPair(tb testing.TB, clientID, scope string) (string, string) {
	return o.p.IssueTokenPair(tb, clientID, scope)
}
func (o oidcProviderServer) RevokeRefreshToken(tb testing.TB, rt string) {
	o.p.RevokeRefreshToken(tb, rt)
}
func (o oidcProviderServer) RefreshTokenRevoked(tb testing.TB, rt string) bool {
	return o.p.RefreshTokenRevoked(tb, rt)
}
func (o oidcProviderServer) TokenInfo(tb testing.TB, at string) int { return o.p.TokenInfo(tb, at) }
func (o oidcProviderServer) TokenRequests(tb testing.TB) int {
	return len(o.p.TokenRequestLog(tb))
}
