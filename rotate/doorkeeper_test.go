package rotate

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"token-rotator/config"
	"token-rotator/internal/testenv"
	"token-rotator/oauth"
)

// The outcomes here involve a grant, so they are held against the real Doorkeeper.

// doorkeeperWorld is a real Vault and a real Doorkeeper with one registered client.
type doorkeeperWorld struct {
	*world
	server     testenv.TokenServer
	id, secret string
}

func newDoorkeeperWorld(t *testing.T, opts testenv.DoorkeeperOptions) *doorkeeperWorld {
	d := &doorkeeperWorld{world: newWorld(t), server: testenv.StartTokenServerWith(t, "doorkeeper", opts)}
	d.id, d.secret = d.server.AddClient(t, "https://partner.example/callback", "")
	return d
}

// partner stores a live refresh token for a partner client writing to output and returns the
// client and the refresh token.
func (d *doorkeeperWorld) partner(t *testing.T, output string) (config.Client, string) {
	_, rt := d.server.IssueTokenPair(t, d.id, "public.contact:read")
	d.put("stora/partner", map[string]any{"client_id": d.id, "client_secret": d.secret, "refresh_token": rt})
	return config.Client{Name: "partner", Grant: config.GrantAuthorizationCode, Secret: "stora/partner", Output: output, TokenURL: d.server.Endpoint()}, rt
}

func (d *doorkeeperWorld) rotator(clients ...config.Client) *Rotator {
	return &Rotator{Store: d.store, Tokens: &oauth.Client{}, Clients: clients, RenewBefore: 30 * time.Minute}
}

// rewriting puts a reverse proxy in front of the token server; rewrite may change each answer.
// It returns the proxy's token URL.
func rewriting(t *testing.T, server testenv.TokenServer, rewrite func(resp *http.Response, body []byte) []byte) string {
	base, _ := url.Parse(server.Base())
	p := httputil.NewSingleHostReverseProxy(base)
	p.ModifyResponse = func(resp *http.Response) error {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		body = rewrite(resp, body)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	s := httptest.NewServer(p)
	t.Cleanup(s.Close)
	return s.URL + "/oauth2/token"
}

func TestImplausibleStoredExpiryNeverWins(t *testing.T) {
	t.Parallel()
	d := newDoorkeeperWorld(t, testenv.DoorkeeperOptions{RevokeImmediately: true})
	c, rt := d.partner(t, "apps/partner")
	d.put("apps/partner", map[string]any{"access_token": "hand-written-token", "token_type": "Bearer", "expires_at": "2099-01-01T00:00:00Z"})
	res := d.rotator(c).Pass(context.Background())[0]
	out := d.data("apps/partner")
	at, _ := out["access_token"].(string)
	if res.Outcome != Rotated || at == "hand-written-token" {
		t.Fatalf("outcome %s (%v), output holds the hand-written token: %v", res.Outcome, res.Err, at == "hand-written-token")
	}
	if got := d.server.TokenInfo(t, at); got != 200 {
		t.Errorf("the access token in Vault: token info HTTP %d, want 200", got)
	}
	if exp, _ := time.Parse(time.RFC3339, out["expires_at"].(string)); time.Until(exp) > 2*time.Hour+time.Minute || time.Until(exp) < 119*time.Minute {
		t.Errorf("expires_at %v, want the granted token's (2h)", out["expires_at"])
	}
	if !res.ExpiresAt.Equal(func() time.Time { e, _ := time.Parse(time.RFC3339, out["expires_at"].(string)); return e }()) {
		t.Errorf("the result's expiry %v is not what Vault holds (%v)", res.ExpiresAt, out["expires_at"])
	}
	if newRT := d.data("stora/partner")["refresh_token"]; newRT == rt || d.server.RefreshTokenRevoked(t, newRT.(string)) {
		t.Errorf("the refresh token in Vault is the spent one, or revoked")
	}
	t.Logf("RELIABILITY outcome | output holds expires_at 2099-01-01 (Doorkeeper, revoke at once) | %s | the new access token in Vault works: token info HTTP %d; %d token request(s)", res.Outcome, d.server.TokenInfo(t, at), d.server.TokenRequests(t))
}

func TestErrorMemberDecidesWhateverTheWrapping(t *testing.T) {
	t.Parallel()
	d := newDoorkeeperWorld(t, testenv.DoorkeeperOptions{RevokeImmediately: true})
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
	}{
		{"403 text/html", 403, "text/html; charset=utf-8"},
		{"401 text/plain", 401, "text/plain"},
		{"400 problem+json", 400, "application/problem+json"},
		{"200 text/html", 200, "text/html"},
		{"no content type", 400, ""},
		{"503 application/json", 503, "application/json"},
		{"429 text/html", 429, "text/html"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rt := d.server.IssueTokenPair(t, d.id, "public.contact:read")
			d.server.RevokeRefreshToken(t, rt) // the server will answer invalid_grant
			path := "stora/" + tc.name
			d.put(path, map[string]any{"client_id": d.id, "client_secret": d.secret, "refresh_token": rt})
			var seen int
			var mu sync.Mutex
			tokenURL := rewriting(t, d.server, func(resp *http.Response, body []byte) []byte {
				mu.Lock()
				seen++
				mu.Unlock()
				resp.StatusCode = tc.status // a gateway relabels the server's answer
				resp.Header.Del("Content-Type")
				if tc.contentType != "" {
					resp.Header.Set("Content-Type", tc.contentType)
				}
				return body
			})
			c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: path, Output: path, TokenURL: tokenURL}
			res := d.rotator(c).Pass(context.Background())[0]
			if res.Outcome != Failed || res.Status != StatusReauthorizationRequired || seen != 1 {
				t.Errorf("outcome %s/%s after %d requests (%v); want failed/reauthorization_required after 1", res.Outcome, res.Status, seen, res.Err)
			}
			if got := d.data(path)["refresh_token"]; got != rt {
				t.Errorf("refresh token in Vault changed")
			}
			t.Logf("RELIABILITY outcome | Doorkeeper's invalid_grant relabelled %s | %s/%s | refresh token kept: %v; %d token request(s)", tc.name, res.Outcome, res.Status, d.data(path)["refresh_token"] == rt, seen)
		})
	}
}

func TestRefreshTokenKeptWhenTheAccessTokenIsUnusable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		member string
		value  any
	}{
		{"token_type mac", "token_type", "mac"},
		{"expires_in -5", "expires_in", -5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDoorkeeperWorld(t, testenv.DoorkeeperOptions{RevokeImmediately: true})
			c, old := d.partner(t, "apps/partner")
			d.put("apps/partner", map[string]any{"access_token": "at-before", "token_type": "Bearer", "expires_at": time.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339)})
			var granted string
			var once sync.Once
			c.TokenURL = rewriting(t, d.server, func(resp *http.Response, body []byte) []byte {
				var m map[string]any
				if resp.StatusCode != 200 || json.Unmarshal(body, &m) != nil {
					return body
				}
				rewritten := body
				once.Do(func() {
					granted, _ = m["refresh_token"].(string)
					m[tc.member] = tc.value
					rewritten, _ = json.Marshal(m)
				})
				return rewritten
			})
			res := d.rotator(c).Pass(context.Background())
			if res[0].Outcome != AccessTokenRefused || !AnyFailed(res) {
				t.Fatalf("outcome %s (%v); want access_token_refused, counted as a failure", res[0].Outcome, res[0].Err)
			}
			cred := d.data("stora/partner")
			if granted == "" || cred["refresh_token"] != granted || d.server.RefreshTokenRevoked(t, granted) {
				t.Fatalf("refresh token in Vault: the granted one %v, live at the server %v", cred["refresh_token"] == granted, !d.server.RefreshTokenRevoked(t, granted))
			}
			if !d.server.RefreshTokenRevoked(t, old) {
				t.Errorf("set-up: the spent refresh token is still live; the server should revoke at once")
			}
			if d.data("apps/partner")["access_token"] != "at-before" {
				t.Errorf("the refused access token was written to the output")
			}
			t.Logf("RELIABILITY outcome | a refresh answered 200 with %s (Doorkeeper, revoke at once) | %s, failed: %v | new refresh token in Vault and live at the server: %v", tc.name, res[0].Outcome, AnyFailed(res), cred["refresh_token"] == granted && !d.server.RefreshTokenRevoked(t, granted))
			// The next pass refreshes with the stored token: nothing needs a human.
			r := d.rotator(c)
			r.Force = true
			if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
				t.Errorf("next pass: %s/%s (%v), want rotated", res.Outcome, res.Status, res.Err)
			}
		})
	}
}

func TestSameAccessTokenBackIsReused(t *testing.T) {
	t.Parallel()
	d := newDoorkeeperWorld(t, testenv.DoorkeeperOptions{ReuseAccessToken: true})
	d.put("stora/cc", map[string]any{"client_id": d.id, "client_secret": d.secret})
	c := config.Client{Name: "cc", Grant: config.GrantClientCredentials, Scope: "public.contact:read", Secret: "stora/cc", Output: "apps/cc", TokenURL: d.server.Endpoint()}
	r := d.rotator(c)
	if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
		t.Fatalf("first pass: %s (%v)", res.Outcome, res.Err)
	}
	first, _ := d.vault.Client.KVv2("secret").Get(context.Background(), "apps/cc")
	r.Force = true
	res := r.Pass(context.Background())[0]
	second, _ := d.vault.Client.KVv2("secret").Get(context.Background(), "apps/cc")
	if res.Outcome != Reused || AnyFailed([]Result{res}) {
		t.Errorf("second pass: %s (%v), want reused", res.Outcome, res.Err)
	}
	if second.VersionMetadata.Version != first.VersionMetadata.Version || second.Data["access_token"] != first.Data["access_token"] {
		t.Errorf("output version %d -> %d; want unchanged", first.VersionMetadata.Version, second.VersionMetadata.Version)
	}
	if exp, _ := time.Parse(time.RFC3339, first.Data["expires_at"].(string)); res.ExpiresAt.Sub(exp).Abs() > time.Minute {
		t.Errorf("reused result expires %v, Vault holds %v", res.ExpiresAt, exp)
	}
	if n := d.server.TokenRequests(t); n != 2 {
		t.Errorf("the server saw %d token requests, want 2", n)
	}
	t.Logf("RELIABILITY outcome | Doorkeeper with reuse_access_token hands back the stored token | %s | output version %d -> %d", res.Outcome, first.VersionMetadata.Version, second.VersionMetadata.Version)
}

func TestRefusedCodeKeepsTheClientWaiting(t *testing.T) {
	t.Parallel()
	d := newDoorkeeperWorld(t, testenv.DoorkeeperOptions{RevokeImmediately: true})
	c, rt := d.partner(t, "apps/partner")
	d.put("apps/partner", map[string]any{"access_token": "at", "token_type": "Bearer", "expires_at": time.Now().Add(90 * time.Minute).UTC().Format(time.RFC3339)})
	d.server.RevokeRefreshToken(t, rt) // the operator revoked the integration
	r := d.rotator(c)
	r.Force = true
	if res := r.Pass(context.Background())[0]; res.Status != StatusReauthorizationRequired {
		t.Fatalf("refresh with a revoked token: %s/%s (%v)", res.Outcome, res.Status, res.Err)
	}
	// The operator stores a code the server refuses (expired, or used already).
	d.put("stora/partner", map[string]any{"client_id": d.id, "client_secret": d.secret, "refresh_token": rt,
		"code": "refused-code-0123456789", "redirect_uri": "https://partner.example/callback", "code_verifier": "v-0123456789012345678901234567890123456789012"})
	r = d.rotator(c)
	res := r.Pass(context.Background())
	if res[0].Outcome != Failed || res[0].Status != StatusReauthorizationRequired || !AnyFailed(res) {
		t.Errorf("refused code: %s/%s (%v); want failed/reauthorization_required", res[0].Outcome, res[0].Status, res[0].Err)
	}
	if cred := d.data("stora/partner"); cred["code"] != nil || cred["code_verifier"] != nil || cred["redirect_uri"] != "https://partner.example/callback" {
		t.Errorf("the refused code or its verifier was left in the secret, or redirect_uri (%v) was not kept for the next code", cred["redirect_uri"])
	}
	requests, refusal := d.server.TokenRequests(t), res[0]
	// The next passes keep the client waiting (and --once exiting 1), spending nothing.
	for i := 0; i < 2; i++ {
		res = d.rotator(c).Pass(context.Background())
		if res[0].Outcome != Failed || res[0].Status != StatusReauthorizationRequired {
			t.Errorf("pass %d after the refused code: %s/%s, want failed/reauthorization_required", i+2, res[0].Outcome, res[0].Status)
		}
	}
	if n := d.server.TokenRequests(t); n != requests {
		t.Errorf("%d more token requests with a refresh token known to be refused", n-requests)
	}
	t.Logf("RELIABILITY outcome | a re-authorization code refused after the refresh token was (Doorkeeper) | %s/%s, then 2 passes %s/%s | %d token requests after the refusal; code removed", refusal.Outcome, refusal.Status, res[0].Outcome, res[0].Status, d.server.TokenRequests(t)-requests)
	// Whatever else the operator changes, the refused refresh token is not spent again.
	d.put("stora/partner", map[string]any{"client_id": d.id, "client_secret": d.secret, "refresh_token": rt, "note": "edited"})
	if res := d.rotator(c).Pass(context.Background())[0]; res.Status != StatusReauthorizationRequired || d.server.TokenRequests(t) != requests {
		t.Errorf("after an unrelated edit: %s/%s, %d more requests", res.Outcome, res.Status, d.server.TokenRequests(t)-requests)
	}
	// A new authorization clears it: an authorization code the server accepts.
	code := d.server.IssueCode(t, d.id, "https://partner.example/callback", "public.contact:read", "")
	d.put("stora/partner", map[string]any{"client_id": d.id, "client_secret": d.secret, "refresh_token": rt, "code": code, "redirect_uri": "https://partner.example/callback"})
	if res := d.rotator(c).Pass(context.Background())[0]; res.Outcome != Rotated {
		t.Errorf("after a new authorization: %s/%s (%v)", res.Outcome, res.Status, res.Err)
	}
}
