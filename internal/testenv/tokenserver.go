//go:build unix

package testenv

import (
	"net/http"
	"testing"
	"time"
)

// testHTTP is the client the helpers use: a hung server fails the test in 30 s instead of hanging
// it until go test's own timeout, which would skip the cleanups that stop the servers.
var testHTTP = &http.Client{Timeout: 30 * time.Second}

// TokenServer is a running token endpoint a test can set up: the bundled fake, the real
// Doorkeeper, or the real oidc-provider. Suites run the same cases against each, so the fake is held to the real server.
type TokenServer interface {
	// Name is "fake", "doorkeeper" or "oidc-provider", with the revocation mode:
	// "fake/revoke-on-use".
	Name() string
	// Endpoint is the token endpoint URL; Base is the server's http://127.0.0.1:PORT.
	Endpoint() string
	Base() string
	// RevokesImmediately reports the revocation mode: true when a refresh token is retired as soon
	// as it is used, false when on first use of the access token issued with it.
	RevokesImmediately() bool
	// AddClient registers an application with a redirect URI and space-separated scopes (empty:
	// any scope) and returns its client_id and client_secret.
	AddClient(tb testing.TB, redirectURI, scopes string) (id, secret string)
	// IssueCode creates an authorization code (challenge: a PKCE S256 code_challenge, or empty).
	IssueCode(tb testing.TB, clientID, redirectURI, scope, challenge string) string
	// IssueTokenPair creates an access and refresh token, as a past authorization would have.
	IssueTokenPair(tb testing.TB, clientID, scope string) (accessToken, refreshToken string)
	// RevokeRefreshToken retires a refresh token, as an operator revoking the integration would.
	RevokeRefreshToken(tb testing.TB, refreshToken string)
	// RefreshTokenRevoked reports whether a refresh token is unknown or retired, without using it.
	RefreshTokenRevoked(tb testing.TB, refreshToken string) bool
	// TokenInfo presents an access token at /oauth2/token/info and returns the HTTP status
	// (oidc-provider: 200 when introspection calls it active, else 401).
	TokenInfo(tb testing.TB, accessToken string) int
	// TokenRequests is how many requests the token endpoint has seen.
	TokenRequests(tb testing.TB) int
}

// TokenServerKinds are the kinds that speak Stora's contract in both revocation modes, which the
// suites run alike. StartTokenServer also knows "oidc-provider" (OIDCProvider), which speaks
// RFC 6749 with form bodies and revokes immediately only.
var TokenServerKinds = []string{"fake", "doorkeeper"}

// StartTokenServer starts a token server of the given kind ("fake", "doorkeeper" or
// "oidc-provider") in the given revocation mode, stopped when the test ends.
func StartTokenServer(tb testing.TB, kind string, revokeImmediately bool) TokenServer {
	tb.Helper()
	return StartTokenServerWith(tb, kind, DoorkeeperOptions{RevokeImmediately: revokeImmediately})
}

// StartTokenServerWith is StartTokenServer with every option.
func StartTokenServerWith(tb testing.TB, kind string, opts DoorkeeperOptions) TokenServer {
	tb.Helper()
	switch kind {
	case "fake":
		s := StartStora(tb)
		s.RevokeImmediately, s.ReuseAccessToken = opts.RevokeImmediately, opts.ReuseAccessToken
		return fakeServer{s}
	case "doorkeeper":
		return doorkeeperServer{StartDoorkeeper(tb, opts)}
	case "oidc-provider":
		if !opts.RevokeImmediately || opts.ReuseAccessToken {
			tb.Fatalf("oidc-provider revokes a used refresh token at once and never reuses an access token: %+v", opts)
		}
		return StartOIDCProvider(tb, OIDCProviderOptions{}).AsTokenServer("")
	}
	tb.Fatalf("unknown token server kind %q", kind)
	return nil
}

func modeName(immediate bool) string {
	if immediate {
		return "revoke-immediately"
	}
	return "revoke-on-use"
}

type fakeServer struct{ s *Stora }

func (f fakeServer) Name() string             { return "fake/" + modeName(f.s.RevokeImmediately) }
func (f fakeServer) Endpoint() string         { return f.s.TokenURL }
func (f fakeServer) Base() string             { return f.s.BaseURL }
func (f fakeServer) RevokesImmediately() bool { return f.s.RevokeImmediately }
func (f fakeServer) AddClient(_ testing.TB, redirectURI, scopes string) (string, string) {
	return f.s.AddApplication(redirectURI, scopes)
}
func (f fakeServer) IssueCode(_ testing.TB, clientID, redirectURI, scope, challenge string) string {
	return f.s.Server.IssueCode(clientID, redirectURI, scope, challenge)
}
func (f fakeServer) IssueTokenPair(_ testing.TB, clientID, scope string) (string, string) {
	return f.s.Server.IssueTokenPair(clientID, scope)
}
func (f fakeServer) RevokeRefreshToken(_ testing.TB, rt string) { f.s.Server.RevokeRefreshToken(rt) }
func (f fakeServer) RefreshTokenRevoked(_ testing.TB, rt string) bool {
	return !f.s.RefreshTokenValid(rt)
}
func (f fakeServer) TokenInfo(tb testing.TB, at string) int {
	return tokenInfo(tb, f.s.BaseURL+"/oauth2/token/info", at)
}
func (f fakeServer) TokenRequests(testing.TB) int { return len(f.s.Requests()) }

type doorkeeperServer struct{ d *Doorkeeper }

func (d doorkeeperServer) Name() string {
	return "doorkeeper/" + modeName(d.d.Options.RevokeImmediately)
}
func (d doorkeeperServer) Endpoint() string         { return d.d.TokenURL }
func (d doorkeeperServer) Base() string             { return d.d.BaseURL }
func (d doorkeeperServer) RevokesImmediately() bool { return d.d.Options.RevokeImmediately }
func (d doorkeeperServer) AddClient(tb testing.TB, redirectURI, scopes string) (string, string) {
	return d.d.AddClient(tb, redirectURI, scopes)
}
func (d doorkeeperServer) IssueCode(tb testing.TB, clientID, redirectURI, scope, challenge string) string {
	return d.d.IssueCode(tb, clientID, redirectURI, scope, challenge)
}
func (d doorkeeperServer) IssueTokenPair(tb testing.TB, clientID, scope string) (string, string) {
	return d.d.IssueTokenPair(tb, clientID, scope)
}
func (d doorkeeperServer) RevokeRefreshToken(tb testing.TB, rt string) {
	d.d.RevokeRefreshToken(tb, rt)
}
func (d doorkeeperServer) RefreshTokenRevoked(tb testing.TB, rt string) bool {
	return d.d.RefreshTokenRevoked(tb, rt)
}
func (d doorkeeperServer) TokenInfo(tb testing.TB, at string) int { return d.d.TokenInfo(tb, at) }
func (d doorkeeperServer) TokenRequests(tb testing.TB) int {
	return len(d.d.TokenRequestLog(tb))
}

func tokenInfo(tb testing.TB, url, accessToken string) int {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := testHTTP.Do(req)
	if err != nil {
		tb.Fatalf("token info: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
