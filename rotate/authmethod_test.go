package rotate

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"token-rotator/config"
	"token-rotator/internal/testenv"
)

// seenRequest is what a recording proxy saw of one token request.
type seenRequest struct {
	contentType, authorization, body string
}

// recording puts a reverse proxy in front of the token server that records each request; it
// returns the proxy's token URL and what it saw so far.
func recording(t *testing.T, server testenv.TokenServer) (string, func() []seenRequest) {
	base, _ := url.Parse(server.Base())
	p := httputil.NewSingleHostReverseProxy(base)
	var mu sync.Mutex
	var seen []seenRequest
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		mu.Lock()
		seen = append(seen, seenRequest{r.Header.Get("Content-Type"), r.Header.Get("Authorization"), string(body)})
		mu.Unlock()
		p.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s.URL + "/oauth2/token", func() []seenRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenRequest(nil), seen...)
	}
}

// client_secret_basic with a form body works against the real Doorkeeper for both grants the job
// repeats: client credentials and refresh. The server saw Basic and a form, and no secret in it.
func TestClientSecretBasicFormAgainstDoorkeeper(t *testing.T) {
	t.Parallel()
	d := newDoorkeeperWorld(t, testenv.DoorkeeperOptions{RevokeImmediately: true})
	tokenURL, seen := recording(t, d.server)
	d.put("stora/cc", map[string]any{"client_id": d.id, "client_secret": d.secret})
	cc := config.Client{Name: "cc", Grant: config.GrantClientCredentials, Scope: "public.contact:read", Secret: "stora/cc", Output: "apps/cc",
		TokenURL: tokenURL, AuthMethod: config.AuthClientSecretBasic, Encoding: config.EncodingForm}
	partner, rt := d.partner(t, "apps/partner")
	partner.TokenURL, partner.AuthMethod, partner.Encoding = tokenURL, config.AuthClientSecretBasic, config.EncodingForm

	for _, res := range d.rotator(cc, partner).Pass(context.Background()) {
		if res.Outcome != Rotated {
			t.Errorf("%s: outcome %s (%v), want rotated", res.Client, res.Outcome, res.Err)
		}
	}
	for _, out := range []string{"apps/cc", "apps/partner"} {
		at, _ := d.data(out)["access_token"].(string)
		if got := d.server.TokenInfo(t, at); got != 200 {
			t.Errorf("%s: the access token in Vault: token info HTTP %d, want 200", out, got)
		}
	}
	if newRT, _ := d.data("stora/partner")["refresh_token"].(string); newRT == rt || newRT == "" || d.server.RefreshTokenRevoked(t, newRT) {
		t.Errorf("the refresh token in Vault is the spent one, missing, or revoked")
	}
	reqs := seen()
	if len(reqs) != 2 {
		t.Fatalf("%d token requests, want 2", len(reqs))
	}
	grants := map[string]bool{}
	for _, r := range reqs {
		form, err := url.ParseQuery(r.body)
		if r.contentType != "application/x-www-form-urlencoded" || err != nil || !strings.HasPrefix(r.authorization, "Basic ") {
			t.Errorf("request: Content-Type %q, Basic %v, form parses: %v", r.contentType, strings.HasPrefix(r.authorization, "Basic "), err == nil)
		}
		if form.Has("client_secret") || form.Has("client_id") {
			t.Errorf("%s request carries credentials in the body too", form.Get("grant_type"))
		}
		grants[form.Get("grant_type")] = true
	}
	if !grants["client_credentials"] || !grants["refresh_token"] {
		t.Errorf("grants sent %v, want client_credentials and refresh_token", grants)
	}
}
