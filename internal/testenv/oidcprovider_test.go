//go:build unix

package testenv

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// oidcPost sends form to the token endpoint as it is, with no client authentication added.
func oidcPost(t *testing.T, p *OIDCProvider, form url.Values, user, pass string) dkResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	return dkSend(t, req)
}

func oidcWant(t *testing.T, what string, r dkResponse, status int, code string) {
	t.Helper()
	if r.Status != status || r.str("error") != code {
		t.Errorf("%s: got %d %v, want %d %s", what, r.Status, r.Body, status, code)
	}
}

func oidcWantTokens(t *testing.T, what string, r dkResponse, withRefresh bool) {
	t.Helper()
	if r.Status != 200 || r.str("access_token") == "" || r.str("token_type") != "Bearer" {
		t.Fatalf("%s: got %d %v, want 200 and a Bearer token", what, r.Status, r.Body)
	}
	if _, has := r.Body["refresh_token"]; has != withRefresh {
		t.Errorf("%s: refresh_token present=%v, want %v", what, has, withRefresh)
	}
}

// TestOIDCProvider proves the harness against the real oidc-provider over HTTP: each client
// authentication method, the code grant driven through its interactions, refresh-token rotation
// and reuse, and the errors the job must tell apart. It records, by asserting them, the answers
// in which oidc-provider differs from Doorkeeper (Stora).
func TestOIDCProvider(t *testing.T) {
	p := StartOIDCProvider(t, OIDCProviderOptions{})
	postID, postSecret := p.AddClientWith(t, OIDCClient{Scopes: dkScopes})
	basicID, basicSecret := p.AddClientWith(t, OIDCClient{Scopes: dkScopes, AuthMethod: "client_secret_basic"})
	publicID, publicSecret := p.AddClientWith(t, OIDCClient{Scopes: dkScopes, AuthMethod: "none"})
	if publicSecret != "" {
		t.Fatalf("a public client got a secret")
	}
	cc := url.Values{"grant_type": {"client_credentials"}, "scope": {"public.contact:write"}}

	t.Run("ClientCredentialsPost", func(t *testing.T) {
		f := url.Values{"client_id": {postID}, "client_secret": {postSecret}}
		for k, v := range cc {
			f[k] = v
		}
		r := oidcPost(t, p, f, "", "")
		oidcWantTokens(t, "client_secret_post", r, false)
		// expires_in is the configured ClientCredentials TTL; scope is echoed; Doorkeeper's
		// created_at and Pragma are not sent.
		if r.Body["expires_in"] != float64(120) || r.str("scope") != "public.contact:write" {
			t.Errorf("body %v", r.Body)
		}
		if _, has := r.Body["created_at"]; has {
			t.Errorf("created_at sent")
		}
		if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Pragma") != "" {
			t.Errorf("Cache-Control %q, Pragma %q", r.Header.Get("Cache-Control"), r.Header.Get("Pragma"))
		}
		if st := p.TokenInfo(t, r.str("access_token")); st != 200 {
			t.Errorf("introspection of the new token: %d", st)
		}
		// It takes client_secret_basic from a client registered for client_secret_post too:
		// the two are one method to it.
		oidcWantTokens(t, "post client with Basic", oidcPost(t, p, cc, postID, postSecret), false)
	})

	t.Run("ClientCredentialsBasic", func(t *testing.T) {
		// RFC 6749 §2.3.1: id and secret form-encoded before Basic; oidc-provider decodes them.
		r := oidcPost(t, p, cc, url.QueryEscape(basicID), url.QueryEscape(basicSecret))
		oidcWantTokens(t, "client_secret_basic", r, false)
		f := url.Values{"client_id": {basicID}, "client_secret": {basicSecret}}
		for k, v := range cc {
			f[k] = v
		}
		oidcWantTokens(t, "basic client with credentials in the body", oidcPost(t, p, f, "", ""), false)
		// Both at once: invalid_request.
		oidcWant(t, "Basic and body credentials", oidcPost(t, p, f, basicID, basicSecret), 400, "invalid_request")
	})

	t.Run("BasicFormEncoding", func(t *testing.T) {
		// RFC 6749 allows only VSCHAR (printable ASCII and space) in ids and secrets; it refuses others
		// with invalid_request. A space, form-encoded as "+", decodes back to a space.
		id, secret := "acme:partner/1", "s3cr:t+&=% x"
		p.AddClientWith(t, OIDCClient{ID: id, Secret: secret, AuthMethod: "client_secret_basic"})
		oidcWantTokens(t, "form-encoded Basic", oidcPost(t, p, cc, url.QueryEscape(id), url.QueryEscape(secret)), false)
		// Unencoded, the ':' in the id splits it in the wrong place and the "%" is no escape:
		// invalid_request, not invalid_client.
		oidcWant(t, "raw Basic", oidcPost(t, p, cc, id, secret), 400, "invalid_request")
	})

	t.Run("Errors", func(t *testing.T) {
		r := oidcPost(t, p, url.Values{"grant_type": {"client_credentials"}, "client_id": {postID}, "client_secret": {"wrong"}}, "", "")
		oidcWant(t, "wrong secret", r, 401, "invalid_client")
		// Unlike Doorkeeper, a 401 comes without WWW-Authenticate.
		if got := r.Header.Get("WWW-Authenticate"); got != "" {
			t.Errorf("wrong secret: WWW-Authenticate %q", got)
		}
		oidcWant(t, "wrong Basic secret", oidcPost(t, p, cc, basicID, "wrong"), 401, "invalid_client")
		// A scope it knows but the client was not given: invalid_scope, as Doorkeeper.
		f := url.Values{"grant_type": {"client_credentials"}, "scope": {"public.invoice:read"}, "client_id": {postID}, "client_secret": {postSecret}}
		oidcWant(t, "scope not given to the client", oidcPost(t, p, f, "", ""), 400, "invalid_scope")
		// A scope it does not know is dropped (Doorkeeper: invalid_scope).
		f.Set("scope", "public.nothing:read")
		r = oidcPost(t, p, f, "", "")
		oidcWantTokens(t, "unknown scope", r, false)
		if _, has := r.Body["scope"]; has {
			t.Errorf("unknown scope: scope %v, want none", r.Body["scope"])
		}
		// JSON bodies are refused (Stora's encoding): the job must send form to it.
		r = dkDo(t, p.TokenURL, "application/json", `{"grant_type":"client_credentials","client_id":"`+postID+`","client_secret":"`+postSecret+`"}`)
		oidcWant(t, "JSON body", r, 400, "invalid_request")
	})

	t.Run("RefreshRotation", func(t *testing.T) {
		for _, id := range []string{postID, basicID, publicID} {
			at, rt := p.IssueTokenPair(t, id, dkScopes)
			if p.RefreshTokenRevoked(t, rt) || p.TokenInfo(t, at) != 200 {
				t.Fatalf("%s: the new pair is not active", p.client(t, id).AuthMethod)
			}
			refresh := func(rt string) (int, map[string]any) {
				return p.TokenRequest(t, id, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
			}
			st, b := refresh(rt)
			newRT, _ := b["refresh_token"].(string)
			if st != 200 || newRT == "" || newRT == rt || b["scope"] != dkScopes || b["expires_in"] != float64(120) {
				t.Fatalf("%s: refresh: %d, new refresh token %v, scope %v", p.client(t, id).AuthMethod, st, newRT != rt, b["scope"])
			}
			for _, k := range []string{"refresh_token_expires_in", "id_token", "created_at"} {
				if _, has := b[k]; has {
					t.Errorf("refresh sent %s", k)
				}
			}
			if !p.RefreshTokenRevoked(t, rt) {
				t.Errorf("the used refresh token is still active")
			}
			// The old access token stays active until it expires (Doorkeeper revokes it).
			if st := p.TokenInfo(t, at); st != 200 {
				t.Errorf("old access token after refresh: %d", st)
			}
			// Reuse is invalid_grant, and revokes the whole grant: the new refresh token too.
			st, b = refresh(rt)
			if st != 400 || b["error"] != "invalid_grant" {
				t.Errorf("reused refresh token: %d %v", st, b)
			}
			if !p.RefreshTokenRevoked(t, newRT) {
				t.Errorf("reuse left the new refresh token active")
			}
		}
	})

	t.Run("RefreshWithWrongSecret", func(t *testing.T) {
		_, rt := p.IssueTokenPair(t, postID, dkScopes)
		r := oidcPost(t, p, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {postID}, "client_secret": {"wrong"}}, "", "")
		oidcWant(t, "refresh with wrong secret", r, 401, "invalid_client")
		if p.RefreshTokenRevoked(t, rt) {
			t.Errorf("a refused refresh retired the token")
		}
		p.RevokeRefreshToken(t, rt)
		if !p.RefreshTokenRevoked(t, rt) {
			t.Errorf("revoked refresh token still active")
		}
		st, b := p.TokenRequest(t, postID, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
		if st != 400 || b["error"] != "invalid_grant" {
			t.Errorf("revoked refresh token: %d %v", st, b)
		}
	})

	t.Run("PKCE", func(t *testing.T) {
		verifier := "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
		for _, id := range []string{postID, publicID} {
			exchange := func(code, verifier string) (int, map[string]any) {
				f := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {dkRedirect}}
				if verifier != "" {
					f.Set("code_verifier", verifier)
				}
				return p.TokenRequest(t, id, f)
			}
			code := p.IssueCode(t, id, dkRedirect, dkScopes, s256(verifier))
			if st, b := exchange(code, verifier+"x"); st != 400 || b["error"] != "invalid_grant" {
				t.Errorf("wrong verifier: %d %v", st, b)
			}
			// A failed verifier does not spend the code: the right one still redeems it.
			if st, b := exchange(code, verifier); st != 200 {
				t.Errorf("right verifier after a wrong one: %d %v", st, b["error"])
			}
			code = p.IssueCode(t, id, dkRedirect, dkScopes, s256(verifier))
			if st, b := exchange(code, ""); st != 400 || b["error"] != "invalid_grant" {
				t.Errorf("challenge without verifier: %d %v (Doorkeeper: invalid_request)", st, b)
			}
			code = p.IssueCode(t, id, dkRedirect, dkScopes, s256(verifier))
			st, b := exchange(code, verifier)
			if st != 200 || b["refresh_token"] == nil {
				t.Errorf("PKCE exchange: %d %v", st, b["error"])
			}
			if _, has := b["id_token"]; has {
				t.Errorf("id_token sent without the openid scope")
			}
		}
		// A public client without a challenge cannot even get a code: the authorization
		// endpoint refuses, so the harness is checked there, not here.
	})

	t.Run("TokenRequests", func(t *testing.T) {
		before := len(p.TokenRequestLog(t))
		p.IssueTokenPair(t, postID, dkScopes) // the harness's own exchange is not counted
		oidcPost(t, p, url.Values{"grant_type": {"client_credentials"}, "client_id": {postID}, "client_secret": {"wrong"}}, "", "")
		log := p.TokenRequestLog(t)
		if len(log) != before+1 || log[len(log)-1] != (OIDCRequest{GrantType: "client_credentials", Status: 401, Auth: "post"}) {
			t.Errorf("token requests: %d before, now %v", before, log[before:])
		}
	})
}

// TestOIDCProviderTokenServer drives oidc-provider through the TokenServer interface the suites
// use: a refresh retires the used refresh token at once (RevokesImmediately), and TokenRequests
// counts only what was sent to the token endpoint.
func TestOIDCProviderTokenServer(t *testing.T) {
	s := StartTokenServer(t, "oidc-provider", true)
	if s.Name() != "oidc-provider/revoke-immediately" || !s.RevokesImmediately() || !strings.HasPrefix(s.Endpoint(), s.Base()+"/") {
		t.Fatalf("%s: endpoint %s, base %s", s.Name(), s.Endpoint(), s.Base())
	}
	id, secret := s.AddClient(t, dkRedirect, dkScopes)
	at, rt := s.IssueTokenPair(t, id, dkScopes)
	if s.TokenInfo(t, at) != 200 || s.RefreshTokenRevoked(t, rt) || s.TokenRequests(t) != 0 {
		t.Fatalf("a new pair: token info %d, refresh token revoked %v, %d token requests",
			s.TokenInfo(t, at), s.RefreshTokenRevoked(t, rt), s.TokenRequests(t))
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {id}, "client_secret": {secret}}
	r := dkDo(t, s.Endpoint(), "application/x-www-form-urlencoded", form.Encode())
	oidcWantTokens(t, "refresh", r, true)
	if !s.RefreshTokenRevoked(t, rt) {
		t.Errorf("the used refresh token is not retired at once")
	}
	if s.TokenInfo(t, "not-a-token") != 401 {
		t.Errorf("token info for an unknown token is not 401")
	}
	_, rt = s.IssueTokenPair(t, id, dkScopes)
	s.RevokeRefreshToken(t, rt)
	if !s.RefreshTokenRevoked(t, rt) {
		t.Errorf("revoked refresh token still active")
	}
	if n := s.TokenRequests(t); n != 1 {
		t.Errorf("TokenRequests = %d, want 1", n)
	}
	code := s.IssueCode(t, id, dkRedirect, "", "")
	form = url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {dkRedirect}, "client_id": {id}, "client_secret": {secret}}
	oidcWantTokens(t, "code without PKCE, confidential client", dkDo(t, s.Endpoint(), "application/x-www-form-urlencoded", form.Encode()), true)
}
