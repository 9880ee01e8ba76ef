//go:build unix

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/internal/storafake"
	"token-rotator/internal/testenv"
)

// TestAgainstTokenServers drives token-rotator as a user would, with a real Vault, against the real
// Doorkeeper and the bundled fake, each in both refresh-token revocation modes, and against the
// real oidc-provider with each confidential auth method, form bodies and its token endpoint found
// by discovery. Every case asserts what the server says about the tokens now in Vault.
func TestAgainstTokenServers(t *testing.T) {
	v := testenv.StartVault(t)
	t.Setenv("VAULT_ADDR", v.Addr)
	t.Setenv("VAULT_TOKEN", v.Token)
	var suites []*serverSuite
	for _, kind := range testenv.TokenServerKinds {
		for _, immediate := range []bool{false, true} {
			srv := testenv.StartTokenServer(t, kind, immediate)
			suites = append(suites, &serverSuite{vault: v, srv: srv, server: "token_url: " + srv.Endpoint() + "\n"})
		}
	}
	// oidc-provider speaks RFC 6749, not Stora's contract: form bodies only, and its 2 h tokens
	// here are Stora's lifetime so that the expiry checks are the same.
	op := testenv.StartOIDCProvider(t, testenv.OIDCProviderOptions{AccessTokenTTL: 2 * time.Hour, ClientCredentialsTTL: 2 * time.Hour})
	for _, method := range []string{"client_secret_post", "client_secret_basic"} {
		suites = append(suites, &serverSuite{vault: v, srv: op.AsTokenServer(method),
			server: "issuer: " + op.BaseURL + "\ntoken_request_encoding: form\ntoken_endpoint_auth_method: " + method + "\n",
			// it drops a scope it does not know; a known one the client was not given is refused
			scopeRefusal: &scopeCase{given: "public.contact:read", asked: "public.invoice:read"},
			oidc:         op, wantAuth: map[string]string{"client_secret_post": "post", "client_secret_basic": "basic"}[method]})
	}
	for _, s := range suites {
		t.Run(s.srv.Name(), func(t *testing.T) {
			t.Run("ClientCredentials", s.clientCredentials)
			t.Run("AuthorizationCodeThenRefresh", func(t *testing.T) { s.authorizationCode(t, "") })
			t.Run("AuthorizationCodeWithPKCEThenRefresh", func(t *testing.T) {
				s.authorizationCode(t, "pkce-verifier-"+strings.Repeat("x", 40))
			})
			t.Run("WrongClientSecret", s.wrongClientSecret)
			t.Run("RevokedRefreshToken", s.revokedRefreshToken)
			t.Run("UnknownScope", s.unknownScope)
		})
	}
}

const (
	redirectURI = "http://localhost:8765/callback"
	appScopes   = "public.contact:read public.contact:write public.invoice:read"
)

type serverSuite struct {
	vault *testenv.Vault
	srv   testenv.TokenServer
	// server is the config's top-level lines naming srv and how to talk to it.
	server string
	// scopeRefusal, when set, is the scope case for a server that ignores a scope it does not
	// know: a client given one scope asks for another the server knows.
	scopeRefusal *scopeCase
	// oidc, when set, is srv's oidc-provider, which accepts either auth method from any client:
	// every token request the job sends must have authenticated as wantAuth ("post", "basic").
	oidc     *testenv.OIDCProvider
	wantAuth string
}

type scopeCase struct{ given, asked string }

// path is a KV path of the test's own: e2e/<test>/<server>/<mode>/<case>/<name>.
func (s *serverSuite) path(t *testing.T, name string) string { return "e2e/" + t.Name() + "/" + name }

func (s *serverSuite) put(t *testing.T, path string, data map[string]any) {
	t.Helper()
	if _, err := s.vault.Client.KVv2("secret").Put(context.Background(), path, data); err != nil {
		t.Fatal(err)
	}
}

func (s *serverSuite) get(t *testing.T, path string) *api.KVSecret {
	t.Helper()
	got, err := s.vault.Client.KVv2("secret").Get(context.Background(), path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return got
}

func (s *serverSuite) absent(path string) bool {
	_, err := s.vault.Client.KVv2("secret").Get(context.Background(), path)
	return err != nil
}

// run writes a config with one client and runs token-rotator with args; it returns the exit code,
// the output, and how many token requests the server saw during the run.
func (s *serverSuite) run(t *testing.T, client string, args ...string) (int, string, int) {
	t.Helper()
	before := s.srv.TokenRequests(t)
	cfg := writeConfig(t, s.server+"clients:\n"+client)
	code, out := runRotator(append([]string{"--config", cfg, "--once"}, args...)...)
	if s.oidc != nil {
		for _, r := range s.oidc.TokenRequestLog(t)[before:] {
			if r.Auth != s.wantAuth {
				t.Errorf("a %s request authenticated as %q, want %q", r.GrantType, r.Auth, s.wantAuth)
			}
		}
	}
	return code, out, s.srv.TokenRequests(t) - before
}

func (s *serverSuite) clientCredentials(t *testing.T) {
	id, secret := s.srv.AddClient(t, redirectURI, appScopes)
	cred, out := s.path(t, "cred"), s.path(t, "token")
	s.put(t, cred, map[string]any{"client_id": id, "client_secret": secret})
	client := "  - {name: acme, grant: client_credentials, scope: 'public.contact:read public.invoice:read', secret: " + cred + ", output: " + out + "}\n"
	code, log, requests := s.run(t, client)
	if code != 0 || requests != 1 {
		t.Fatalf("exit %d after %d token requests, want 0 after 1:\n%s", code, requests, log)
	}
	tok := s.get(t, out)
	if st := s.srv.TokenInfo(t, str(tok, "access_token")); st != 200 {
		t.Errorf("the server answered %d to the access token in Vault, want 200", st)
	}
	if str(tok, "scope") != "public.contact:read public.invoice:read" || tok.Data["refresh_token"] != nil {
		t.Errorf("stored scope %q, refresh token present %v", str(tok, "scope"), tok.Data["refresh_token"] != nil)
	}
	assertExpiry(t, tok)
	assertNoSecrets(t, log, secret, str(tok, "access_token"))
}

// authorizationCode exchanges a code (with PKCE when verifier is set), then refreshes twice on
// later passes. After each rotation the new pair must be in Vault before anything uses the new
// access token: in the revoke-on-use mode the old refresh token is then still live, and presenting
// the access token from Vault is what retires it.
func (s *serverSuite) authorizationCode(t *testing.T, verifier string) {
	id, secret := s.srv.AddClient(t, redirectURI, appScopes)
	challenge := ""
	if verifier != "" {
		challenge = storafake.S256(verifier)
	}
	code := s.srv.IssueCode(t, id, redirectURI, "public.contact:read public.contact:write", challenge)
	cred := s.path(t, "cred")
	data := map[string]any{"client_id": id, "client_secret": secret, "code": code, "redirect_uri": redirectURI, "operator": "op-42"}
	if verifier != "" {
		data["code_verifier"] = verifier
	}
	s.put(t, cred, data)
	client := "  - {name: partner, grant: authorization_code, secret: " + cred + "}\n"

	exit, log, requests := s.run(t, client)
	if exit != 0 || requests != 1 {
		t.Fatalf("exchange: exit %d after %d token requests:\n%s", exit, requests, log)
	}
	got := s.get(t, cred)
	if got.Data["code"] != nil || got.Data["code_verifier"] != nil || str(got, "operator") != "op-42" || str(got, "redirect_uri") != redirectURI {
		t.Errorf("after the exchange: code kept %v, code_verifier kept %v, other keys kept %v",
			got.Data["code"] != nil, got.Data["code_verifier"] != nil, str(got, "operator") == "op-42")
	}
	assertExpiry(t, got)
	rt, at := str(got, "refresh_token"), str(got, "access_token")
	if st := s.srv.TokenInfo(t, at); st != 200 {
		t.Fatalf("the server answered %d to the exchanged access token", st)
	}
	logs := log
	for pass := 1; pass <= 2; pass++ {
		exit, log, requests = s.run(t, client, "--force")
		logs += log
		if exit != 0 || requests != 1 {
			t.Fatalf("refresh %d: exit %d after %d token requests:\n%s", pass, exit, requests, log)
		}
		got = s.get(t, cred)
		newRT, newAT := str(got, "refresh_token"), str(got, "access_token")
		if newRT == "" || newRT == rt || newAT == at {
			t.Fatalf("refresh %d did not store a new pair", pass)
		}
		if s.srv.RevokesImmediately() != s.srv.RefreshTokenRevoked(t, rt) {
			t.Errorf("refresh %d: old refresh token revoked = %v right after the run; the job must not use the new access token before the pair is in Vault",
				pass, !s.srv.RevokesImmediately())
		}
		if st := s.srv.TokenInfo(t, newAT); st != 200 {
			t.Fatalf("refresh %d: the server answered %d to the access token in Vault", pass, st)
		}
		if !s.srv.RefreshTokenRevoked(t, rt) || s.srv.RefreshTokenRevoked(t, newRT) {
			t.Errorf("refresh %d: after the new access token was used, old revoked %v, new revoked %v",
				pass, s.srv.RefreshTokenRevoked(t, rt), s.srv.RefreshTokenRevoked(t, newRT))
		}
		assertNoSecrets(t, log, rt, at)
		rt, at = newRT, newAT
	}
	assertNoSecrets(t, logs, secret, code, verifier, rt, at)
}

func (s *serverSuite) wrongClientSecret(t *testing.T) {
	id, _ := s.srv.AddClient(t, redirectURI, appScopes)
	cred, out := s.path(t, "cred"), s.path(t, "token")
	s.put(t, cred, map[string]any{"client_id": id, "client_secret": "definitely-not-the-secret"})
	client := "  - {name: acme, grant: client_credentials, scope: public.contact:read, secret: " + cred + ", output: " + out + "}\n"
	exit, log, requests := s.run(t, client)
	if exit != 1 || requests != 1 || !strings.Contains(log, "HTTP 401 invalid_client") {
		t.Fatalf("exit %d after %d requests, want 1 after 1 with HTTP 401 invalid_client:\n%s", exit, requests, log)
	}
	if s.get(t, cred).VersionMetadata.Version != 1 || !s.absent(out) {
		t.Errorf("something was written")
	}
	assertNoSecrets(t, log, "definitely-not-the-secret")
}

func (s *serverSuite) revokedRefreshToken(t *testing.T) {
	id, secret := s.srv.AddClient(t, redirectURI, appScopes)
	_, rt := s.srv.IssueTokenPair(t, id, "public.contact:read")
	s.srv.RevokeRefreshToken(t, rt)
	cred, out := s.path(t, "cred"), s.path(t, "token")
	s.put(t, cred, map[string]any{"client_id": id, "client_secret": secret, "refresh_token": rt})
	s.put(t, out, map[string]any{"access_token": "expired-token", "expires_at": "2020-01-01T00:00:00Z"})
	client := "  - {name: partner, grant: authorization_code, secret: " + cred + ", output: " + out + "}\n"
	exit, log, requests := s.run(t, client)
	if exit != 1 || requests != 1 || !strings.Contains(log, "HTTP 400 invalid_grant") {
		t.Fatalf("exit %d after %d requests, want 1 after 1 with HTTP 400 invalid_grant:\n%s", exit, requests, log)
	}
	// The claim and its release leave new versions of the credential secret, with the same data.
	c, o := s.get(t, cred), s.get(t, out)
	if len(c.Data) != 3 || str(c, "refresh_token") != rt || str(c, "client_id") != id || o.VersionMetadata.Version != 1 {
		t.Errorf("something was overwritten: credential keys %d, refresh token kept %v, output version %d",
			len(c.Data), str(c, "refresh_token") == rt, o.VersionMetadata.Version)
	}
	if c.CustomMetadata["rotator_status"] != "reauthorization_required" {
		t.Errorf("status in metadata %v, want reauthorization_required", c.CustomMetadata["rotator_status"])
	}
	assertNoSecrets(t, log, secret, rt)
}

func (s *serverSuite) unknownScope(t *testing.T) {
	sc := scopeCase{given: "", asked: "public.spaceships:read"}
	if s.scopeRefusal != nil {
		sc = *s.scopeRefusal
	}
	id, secret := s.srv.AddClient(t, redirectURI, sc.given)
	cred := s.path(t, "cred")
	s.put(t, cred, map[string]any{"client_id": id, "client_secret": secret})
	client := "  - {name: acme, grant: client_credentials, scope: " + sc.asked + ", secret: " + cred + "}\n"
	exit, log, requests := s.run(t, client)
	if exit != 1 || requests != 1 || !strings.Contains(log, "HTTP 400 invalid_scope") {
		t.Fatalf("exit %d after %d requests, want 1 after 1 with HTTP 400 invalid_scope:\n%s", exit, requests, log)
	}
	if s.get(t, cred).VersionMetadata.Version != 1 {
		t.Errorf("something was written")
	}
}
