//go:build unix

package testenv

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const (
	dkInvalidClient = "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method."
	dkInvalidGrant  = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."
	dkInvalidScope  = "The requested scope is invalid, unknown, or malformed."
	dkRedirect      = "http://localhost:8765/callback"
	dkScopes        = "public.contact:read public.contact:write"
)

type dkResponse struct {
	Status int
	Header http.Header
	Body   map[string]any
}

func (r dkResponse) str(k string) string { s, _ := r.Body[k].(string); return s }

// dkPost sends body to url as JSON (Content-Type application/json), as the Stora contract says.
func dkPost(t *testing.T, url string, body map[string]string) dkResponse {
	t.Helper()
	b, _ := json.Marshal(body)
	return dkDo(t, url, "application/json", string(b))
}

func dkDo(t *testing.T, url, contentType, body string) dkResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return dkSend(t, req)
}

// dkSend sends req and decodes its JSON answer.
func dkSend(t *testing.T, req *http.Request) dkResponse {
	t.Helper()
	url := req.URL.String()
	resp, err := testHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := dkResponse{Status: resp.StatusCode, Header: resp.Header}
	if err := json.Unmarshal(data, &r.Body); err != nil {
		t.Fatalf("POST %s: %s: not JSON: %q", url, resp.Status, data)
	}
	return r
}

func wantError(t *testing.T, what string, r dkResponse, status int, code, desc string) {
	t.Helper()
	if r.Status != status || r.str("error") != code || (desc != "" && r.str("error_description") != desc) {
		t.Errorf("%s: got %d %v, want %d %s %q", what, r.Status, r.Body, status, code, desc)
	}
	if got := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Bearer realm="Doorkeeper", error="`+code+`"`) {
		t.Errorf("%s: WWW-Authenticate %q", what, got)
	}
}

func wantTokens(t *testing.T, what string, r dkResponse, withRefresh bool) {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("%s: got %d %v, want 200", what, r.Status, r.Body)
	}
	if r.str("access_token") == "" || r.str("token_type") != "Bearer" || r.Body["expires_in"] != float64(7200) {
		t.Errorf("%s: body %v", what, r.Body)
	}
	if c, _ := r.Body["created_at"].(float64); time.Since(time.Unix(int64(c), 0)).Abs() > time.Minute {
		t.Errorf("%s: created_at %v", what, r.Body["created_at"])
	}
	if _, has := r.Body["refresh_token"]; has != withRefresh {
		t.Errorf("%s: refresh_token present=%v, want %v (body %v)", what, has, withRefresh, r.Body)
	}
	if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Pragma") != "no-cache" {
		t.Errorf("%s: Cache-Control %q Pragma %q", what, r.Header.Get("Cache-Control"), r.Header.Get("Pragma"))
	}
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestConformance sends the same requests to the real Doorkeeper and to the bundled fake, in both
// revocation modes, and holds both to the same answers: the fake agrees with the real server on
// every case both run.
func TestConformance(t *testing.T) {
	for _, kind := range TokenServerKinds {
		for _, immediate := range []bool{false, true} {
			t.Run(kind+"/"+modeName(immediate), func(t *testing.T) {
				t.Parallel()
				conformance(t, StartTokenServer(t, kind, immediate))
			})
		}
	}
}

func conformance(t *testing.T, d TokenServer) {
	immediate := d.RevokesImmediately()
	id, secret := d.AddClient(t, dkRedirect, dkScopes)
	creds := func(m map[string]string) map[string]string {
		m["client_id"], m["client_secret"] = id, secret
		return m
	}
	if n := d.TokenRequests(t); n != 0 {
		t.Errorf("TokenRequests before any = %d", n)
	}

	t.Run("ClientCredentials", func(t *testing.T) {
		r := dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "client_credentials", "scope": "public.contact:write"}))
		wantTokens(t, "client_credentials", r, false)
		if r.str("scope") != "public.contact:write" {
			t.Errorf("scope %q", r.str("scope"))
		}
		// No scope: the default scope (public.contact:read).
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "client_credentials"}))
		wantTokens(t, "client_credentials without scope", r, false)
		if r.str("scope") != "public.contact:read" {
			t.Errorf("default scope %q", r.str("scope"))
		}
		if st := d.TokenInfo(t, r.str("access_token")); st != 200 {
			t.Errorf("token info = %d", st)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		r := dkPost(t, d.Endpoint(), map[string]string{"grant_type": "client_credentials", "client_id": id, "client_secret": "wrong"})
		wantError(t, "wrong secret", r, 401, "invalid_client", dkInvalidClient)
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "client_credentials", "scope": "public.nothing:read"}))
		wantError(t, "unknown scope", r, 400, "invalid_scope", dkInvalidScope)
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "client_credentials", "scope": "public.invoice:read"}))
		wantError(t, "scope not granted to the application", r, 400, "invalid_scope", dkInvalidScope)
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "password"}))
		wantError(t, "grant flow not enabled", r, 400, "unsupported_grant_type", "")
		// A JSON body without a JSON content type is not parsed.
		b, _ := json.Marshal(creds(map[string]string{"grant_type": "client_credentials"}))
		r = dkDo(t, d.Endpoint(), "", string(b))
		wantError(t, "JSON without content type", r, 400, "invalid_request", "Missing required parameter: grant_type.")
		// Form bodies work too.
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
		r = dkDo(t, d.Endpoint(), "application/x-www-form-urlencoded", form.Encode())
		wantTokens(t, "form body", r, false)
		// A bad refresh token is reported before bad client credentials.
		r = dkPost(t, d.Endpoint(), map[string]string{"grant_type": "refresh_token", "refresh_token": "nope", "client_id": id, "client_secret": "wrong"})
		wantError(t, "unknown refresh token and wrong secret", r, 400, "invalid_grant", dkInvalidGrant)
	})

	t.Run("AuthorizationCode", func(t *testing.T) {
		code := d.IssueCode(t, id, dkRedirect, dkScopes, "")
		r := dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "authorization_code", "code": code, "redirect_uri": dkRedirect}))
		wantTokens(t, "authorization_code", r, true)
		if r.str("scope") != dkScopes {
			t.Errorf("scope %q", r.str("scope"))
		}
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "authorization_code", "code": code, "redirect_uri": dkRedirect}))
		wantError(t, "code reused", r, 400, "invalid_grant", dkInvalidGrant)

		code = d.IssueCode(t, id, dkRedirect, dkScopes, "")
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "authorization_code", "code": code, "redirect_uri": "http://localhost:8765/other"}))
		wantError(t, "other redirect_uri", r, 400, "invalid_grant", dkInvalidGrant)

		code = d.IssueCode(t, id, dkRedirect, dkScopes, "")
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "authorization_code", "code": code, "redirect_uri": dkRedirect, "code_verifier": "unasked-for-verifier-0123456789012345678901"}))
		wantError(t, "verifier for a code without challenge", r, 400, "invalid_grant", dkInvalidGrant)
	})

	t.Run("PKCE", func(t *testing.T) {
		verifier := "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
		code := d.IssueCode(t, id, dkRedirect, dkScopes, s256(verifier))
		r := dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "authorization_code", "code": code, "redirect_uri": dkRedirect}))
		wantError(t, "challenge without verifier", r, 400, "invalid_request", "Missing required parameter: code_verifier.")
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "authorization_code", "code": code, "redirect_uri": dkRedirect, "code_verifier": verifier + "x"}))
		wantError(t, "wrong verifier", r, 400, "invalid_grant", dkInvalidGrant)
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "authorization_code", "code": code, "redirect_uri": dkRedirect, "code_verifier": verifier}))
		wantTokens(t, "PKCE exchange", r, true)
	})

	t.Run("Refresh", func(t *testing.T) {
		_, rt := d.IssueTokenPair(t, id, dkScopes)
		refresh := func(rt string) dkResponse {
			return dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "refresh_token", "refresh_token": rt}))
		}
		r := refresh(rt)
		wantTokens(t, "refresh", r, true)
		newAT, newRT := r.str("access_token"), r.str("refresh_token")
		if newRT == rt || r.str("scope") != dkScopes {
			t.Errorf("refresh: new refresh token %v, scope %q", newRT != rt, r.str("scope"))
		}
		if immediate {
			wantError(t, "reused refresh token", refresh(rt), 400, "invalid_grant", dkInvalidGrant)
		} else {
			// Still valid until the new access token is used.
			r2 := refresh(rt)
			wantTokens(t, "reused refresh token before use of the new access token", r2, true)
			if st := d.TokenInfo(t, newAT); st != 200 {
				t.Fatalf("token info = %d", st)
			}
			wantError(t, "reused refresh token after use of the new access token", refresh(rt), 400, "invalid_grant", dkInvalidGrant)
			// The second pair, issued from the same old refresh token, still works.
			newRT = r2.str("refresh_token")
		}
		// Narrower scope on refresh is fine; wider is not.
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "refresh_token", "refresh_token": newRT, "scope": "public.invoice:read"}))
		wantError(t, "refresh with wider scope", r, 400, "invalid_scope", dkInvalidScope)
		r = dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "refresh_token", "refresh_token": newRT, "scope": "public.contact:read"}))
		wantTokens(t, "refresh with narrower scope", r, true)
		if r.str("scope") != "public.contact:read" {
			t.Errorf("narrowed scope %q", r.str("scope"))
		}
		// Wrong secret with a valid refresh token: invalid_client.
		_, rt = d.IssueTokenPair(t, id, dkScopes)
		r = dkPost(t, d.Endpoint(), map[string]string{"grant_type": "refresh_token", "refresh_token": rt, "client_id": id, "client_secret": "wrong"})
		wantError(t, "refresh with wrong secret", r, 401, "invalid_client", dkInvalidClient)
		// Revoked by the operator.
		d.RevokeRefreshToken(t, rt)
		wantError(t, "revoked refresh token", refresh(rt), 400, "invalid_grant", dkInvalidGrant)
	})

	t.Run("CheckOrder", func(t *testing.T) {
		// Doorkeeper checks parameters before the client, and a refresh token before the client.
		r := dkPost(t, d.Endpoint(), map[string]string{"grant_type": "authorization_code", "redirect_uri": dkRedirect, "client_id": id, "client_secret": "wrong"})
		wantError(t, "missing code, wrong secret", r, 400, "invalid_request", "Missing required parameter: code.")
		r = dkPost(t, d.Endpoint(), map[string]string{"grant_type": "refresh_token", "client_id": id, "client_secret": "wrong"})
		wantError(t, "missing refresh token, wrong secret", r, 400, "invalid_request", "Missing required parameter: refresh_token.")
		_, rt := d.IssueTokenPair(t, id, dkScopes)
		r = dkPost(t, d.Endpoint(), map[string]string{"grant_type": "refresh_token", "refresh_token": rt})
		wantError(t, "refresh without client credentials", r, 400, "invalid_grant", dkInvalidGrant)
	})

	t.Run("Scopes", func(t *testing.T) {
		r := dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "client_credentials", "scope": "  public.contact:write   public.contact:read "}))
		wantTokens(t, "scope with extra spaces", r, false)
		if r.str("scope") != "public.contact:write public.contact:read" {
			t.Errorf("scope %q, want it normalised", r.str("scope"))
		}
		other, otherSecret := d.AddClient(t, dkRedirect, "public.invoice:read")
		r = dkPost(t, d.Endpoint(), map[string]string{"grant_type": "client_credentials", "client_id": other, "client_secret": otherSecret})
		wantTokens(t, "no scope, application without the default scope", r, false)
		if _, has := r.Body["scope"]; has {
			t.Errorf("scope %v, want none", r.Body["scope"])
		}
	})

	t.Run("NotTheTokenEndpoint", func(t *testing.T) {
		resp, err := testHTTP.Get(d.Endpoint())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("GET on the token endpoint: %d, want 404", resp.StatusCode)
		}
		req, _ := http.NewRequest(http.MethodPost, d.Endpoint(), strings.NewReader(`{"grant_type":`))
		req.Header.Set("Content-Type", "application/json")
		resp, err = testHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || len(body) != 0 {
			t.Errorf("malformed JSON: %d %q, want 400 and no body", resp.StatusCode, body)
		}
	})

	if !immediate {
		t.Run("RevokeOnUseEvenWithARevokedAccessToken", func(t *testing.T) {
			_, rt := d.IssueTokenPair(t, id, dkScopes)
			r := dkPost(t, d.Endpoint(), creds(map[string]string{"grant_type": "refresh_token", "refresh_token": rt}))
			wantTokens(t, "refresh", r, true)
			if d.RefreshTokenRevoked(t, rt) {
				t.Fatalf("old refresh token revoked before the new access token was used")
			}
			d.RevokeRefreshToken(t, r.str("refresh_token")) // revokes the new pair's row
			if st := d.TokenInfo(t, r.str("access_token")); st != 401 {
				t.Errorf("token info with a revoked access token: %d", st)
			}
			if !d.RefreshTokenRevoked(t, rt) {
				t.Errorf("presenting the revoked new access token did not retire the old refresh token")
			}
		})
	}

	t.Run("TokenInfo", func(t *testing.T) {
		if st := d.TokenInfo(t, "not-a-token"); st != 401 {
			t.Errorf("token info for unknown token = %d", st)
		}
	})

	if n := d.TokenRequests(t); n < 20 {
		t.Errorf("the server counted %d token requests, want 20 or more", n)
	}
}

// TestReuseAccessToken holds the fake and the real server alike to Doorkeeper's
// reuse_access_token: a live token is handed out again, for client credentials and for a second
// authorization code exchange alike.
func TestReuseAccessToken(t *testing.T) {
	for _, kind := range TokenServerKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			d := StartTokenServerWith(t, kind, DoorkeeperOptions{ReuseAccessToken: true, RevokeImmediately: true})
			id, secret := d.AddClient(t, dkRedirect, dkScopes)
			body := map[string]string{"grant_type": "client_credentials", "client_id": id, "client_secret": secret, "scope": "public.contact:read"}
			r1 := dkPost(t, d.Endpoint(), body)
			wantTokens(t, "first", r1, false)
			time.Sleep(1100 * time.Millisecond)
			r2 := dkPost(t, d.Endpoint(), body)
			if r2.Status != 200 || r2.str("access_token") != r1.str("access_token") {
				t.Errorf("reuse_access_token: second token differs: %d", r2.Status)
			}
			if e, _ := r2.Body["expires_in"].(float64); e >= 7200 || e < 7190 {
				t.Errorf("reused token expires_in = %v, want remaining lifetime", r2.Body["expires_in"])
			}
			if r2.Body["created_at"] != r1.Body["created_at"] {
				t.Errorf("reused token created_at %v != %v", r2.Body["created_at"], r1.Body["created_at"])
			}
			exchange := func() dkResponse {
				code := d.IssueCode(t, id, dkRedirect, dkScopes, "")
				return dkPost(t, d.Endpoint(), map[string]string{"grant_type": "authorization_code", "code": code,
					"redirect_uri": dkRedirect, "client_id": id, "client_secret": secret})
			}
			c1, c2 := exchange(), exchange()
			wantTokens(t, "first exchange", c1, true)
			if c2.str("access_token") != c1.str("access_token") || c2.str("refresh_token") != c1.str("refresh_token") {
				t.Errorf("a second exchange did not hand out the same live pair")
			}
			if n := d.TokenRequests(t); n != 4 {
				t.Errorf("TokenRequests = %d, want 4", n)
			}
		})
	}
}

// TestDoorkeeperBasicHeaderWins records where the real Doorkeeper 5.5 departs from RFC 6749 §2.3
// and from oidc-provider (and so from the bundled fake, which follows them): a request that
// authenticates with a Basic header and a client_secret in the body at once is not refused; the
// header wins, even when the body's secret is wrong.
func TestDoorkeeperBasicHeaderWins(t *testing.T) {
	d := StartTokenServer(t, "doorkeeper", true)
	id, secret := d.AddClient(t, dkRedirect, dkScopes)
	body := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {"not-" + secret}}.Encode()
	req, err := http.NewRequest(http.MethodPost, d.Endpoint(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	if r := dkSend(t, req); r.Status != 200 || r.str("access_token") == "" {
		t.Errorf("Basic header and a wrong body secret: got %d %v, want 200 with a token (the header wins in 5.5)", r.Status, r.Body)
	}
}
