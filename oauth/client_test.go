package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var sent = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// endpoint serves one canned response and records what it was sent.
type endpoint struct {
	status      int
	contentType string
	body        string
	header      http.Header
	requests    atomic.Int32
	got         map[string]string
	gotHeader   http.Header
}

func (e *endpoint) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		e.gotHeader = r.Header.Clone()
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &e.got)
		for k, v := range e.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", e.contentType)
		if e.contentType == "" {
			w.Header()["Content-Type"] = nil // no Content-Type at all, not even a sniffed one
		}
		w.WriteHeader(e.status)
		io.WriteString(w, e.body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/oauth2/token"
}

func client() *Client { return &Client{Now: func() time.Time { return sent }} }

var refresh = Request{GrantType: GrantRefreshToken, ClientID: "cid", ClientSecret: "csecret", RefreshToken: "rt-old"}

func TestTokenSendsOneJSONRequestPerStoraContract(t *testing.T) {
	e := &endpoint{status: 200, contentType: "application/json; charset=utf-8",
		body: `{"access_token":"at","token_type":"Bearer","expires_in":7200,"refresh_token":"rt-new","scope":"public.contact:read","created_at":1740235260}`}
	url := e.start(t)
	tok, err := client().Token(context.Background(), url, refresh)
	if err != nil {
		t.Fatal(err)
	}
	if e.requests.Load() != 1 {
		t.Errorf("%d requests, want 1", e.requests.Load())
	}
	if e.gotHeader.Get("Content-Type") != "application/json" || e.gotHeader.Get("Accept") != "application/json" {
		t.Errorf("headers %v", e.gotHeader)
	}
	if e.gotHeader.Get("Authorization") != "" {
		t.Errorf("sent a second auth method (Authorization header)")
	}
	want := map[string]string{"grant_type": "refresh_token", "client_id": "cid", "client_secret": "csecret", "refresh_token": "rt-old"}
	for k, v := range want {
		if e.got[k] != v {
			t.Errorf("body %s = %q, want %q", k, e.got[k], v)
		}
	}
	if len(e.got) != len(want) {
		t.Errorf("body has %d fields, want %d: %v", len(e.got), len(want), e.got)
	}
	if tok.AccessToken != "at" || tok.RefreshToken != "rt-new" || tok.TokenType != "Bearer" || tok.Scope != "public.contact:read" {
		t.Errorf("token %+v", tok)
	}
	if !tok.ExpiresAt.Equal(sent.Add(2 * time.Hour)) {
		t.Errorf("ExpiresAt %v, want %v", tok.ExpiresAt, sent.Add(2*time.Hour))
	}
}

func TestTokenRequestFieldsPerGrant(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		want map[string]string
	}{
		{"client_credentials", Request{GrantType: GrantClientCredentials, ClientID: "c", ClientSecret: "s", Scope: "public.contact:write"},
			map[string]string{"grant_type": "client_credentials", "client_id": "c", "client_secret": "s", "scope": "public.contact:write"}},
		{"authorization_code with PKCE", Request{GrantType: GrantAuthorizationCode, ClientID: "c", ClientSecret: "s", Code: "k", RedirectURI: "https://a.test", CodeVerifier: "v", Scope: "ignored"},
			map[string]string{"grant_type": "authorization_code", "client_id": "c", "client_secret": "s", "code": "k", "redirect_uri": "https://a.test", "code_verifier": "v"}},
		{"authorization_code without PKCE", Request{GrantType: GrantAuthorizationCode, ClientID: "c", ClientSecret: "s", Code: "k", RedirectURI: "https://a.test"},
			map[string]string{"grant_type": "authorization_code", "client_id": "c", "client_secret": "s", "code": "k", "redirect_uri": "https://a.test"}},
		{"refresh with scope", Request{GrantType: GrantRefreshToken, ClientID: "c", ClientSecret: "s", RefreshToken: "r", Scope: "public.contact:read"},
			map[string]string{"grant_type": "refresh_token", "client_id": "c", "client_secret": "s", "refresh_token": "r", "scope": "public.contact:read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &endpoint{status: 200, contentType: "application/json", body: `{"access_token":"at","token_type":"Bearer","expires_in":7200}`}
			if _, err := client().Token(context.Background(), e.start(t), tc.req); err != nil {
				t.Fatal(err)
			}
			if len(e.got) != len(tc.want) {
				t.Errorf("body %v, want %v", e.got, tc.want)
			}
			for k, v := range tc.want {
				if e.got[k] != v {
					t.Errorf("body %s = %q, want %q", k, e.got[k], v)
				}
			}
		})
	}
}

func TestTokenRefusesIncompleteRequestsWithoutSending(t *testing.T) {
	e := &endpoint{status: 200, contentType: "application/json", body: `{}`}
	url := e.start(t)
	for _, r := range []Request{
		{GrantType: GrantRefreshToken, ClientID: "c", ClientSecret: "s"},
		{GrantType: GrantAuthorizationCode, ClientID: "c", ClientSecret: "s", Code: "k"},
		{GrantType: GrantClientCredentials, ClientID: "c"},
		{GrantType: "password", ClientID: "c", ClientSecret: "s"},
	} {
		if _, err := client().Token(context.Background(), url, r); err == nil {
			t.Errorf("%+v: no error", r)
		}
	}
	if e.requests.Load() != 0 {
		t.Errorf("%d requests sent for incomplete requests", e.requests.Load())
	}
}

func TestTokenErrorResponses(t *testing.T) {
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		body        string
		header      http.Header
		wantCode    string
		wantInError []string
	}{
		{"invalid_client 401", 401, "application/json; charset=utf-8",
			`{"error":"invalid_client","error_description":"Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method."}`,
			nil, ErrInvalidClient, []string{"HTTP 401", "invalid_client", "Client authentication failed"}},
		{"invalid_grant 400", 400, "application/json", `{"error":"invalid_grant","error_description":"The provided authorization grant is invalid"}`,
			nil, ErrInvalidGrant, []string{"HTTP 400", "invalid_grant"}},
		{"HTML 502", 502, "text/html", "<html><body>Bad gateway</body></html>", nil, "", []string{"HTTP 502", "text/html", "Bad gateway"}},
		{"HTML maintenance page with 200", 200, "text/html", "<html>Down for maintenance</html>", nil, "", []string{"HTTP 200", "not JSON", "maintenance"}},
		{"error member in a 200", 200, "application/json", `{"error":"invalid_grant","error_description":"revoked"}`, nil, ErrInvalidGrant, []string{"HTTP 200", "invalid_grant"}},
		{"redirect", 302, "text/html", "", http.Header{"Location": {"https://elsewhere.test/"}}, "", []string{"HTTP 302", "redirect not followed"}},
		{"empty 200", 200, "application/json", "", nil, "", []string{"HTTP 200", "malformed"}},
		{"no access token", 200, "application/json", `{"token_type":"Bearer","expires_in":7200}`, nil, "", []string{"access_token"}},
		{"wrong token type", 200, "application/json", `{"access_token":"x","token_type":"mac","expires_in":7200}`, nil, "", []string{"token_type"}},
		{"expired on arrival", 200, "application/json", `{"access_token":"x","token_type":"Bearer","expires_in":0}`, nil, "", []string{"expires_in"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &endpoint{status: tc.status, contentType: tc.contentType, body: tc.body, header: tc.header}
			_, err := client().Token(context.Background(), e.start(t), refresh)
			var oe *Error
			if !errors.As(err, &oe) {
				t.Fatalf("error %v (%T), want *Error", err, err)
			}
			if oe.Status != tc.status || oe.Code != tc.wantCode {
				t.Errorf("Status %d Code %q, want %d %q", oe.Status, oe.Code, tc.status, tc.wantCode)
			}
			for _, w := range tc.wantInError {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if e.requests.Load() != 1 {
				t.Errorf("%d requests, want exactly 1", e.requests.Load())
			}
		})
	}
}

func TestTokenBodyCapped(t *testing.T) {
	e := &endpoint{status: 200, contentType: "application/json", body: `{"access_token":"` + strings.Repeat("a", 100<<10) + `","token_type":"Bearer"}`}
	_, err := client().Token(context.Background(), e.start(t), refresh)
	var oe *Error
	if !errors.As(err, &oe) || !strings.Contains(oe.Reason, "longer than") {
		t.Fatalf("error %v, want a body-too-long *Error", err)
	}
}

func TestTokenBodyAtTheCapIsRead(t *testing.T) {
	body := `{"access_token":"at","token_type":"Bearer","expires_in":7200}`
	e := &endpoint{status: 200, contentType: "application/json", body: body}
	c := client()
	c.MaxBody = int64(len(body))
	if _, err := c.Token(context.Background(), e.start(t), refresh); err != nil {
		t.Fatalf("a body of exactly MaxBody bytes: %v", err)
	}
}

func TestTokenTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Second):
		}
	}))
	defer srv.Close()
	c := &Client{HTTP: &http.Client{Timeout: 100 * time.Millisecond}}
	_, err := c.Token(context.Background(), srv.URL, refresh)
	var te *TransportError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "Timeout") {
		t.Fatalf("error %v, want a timeout TransportError", err)
	}
}

func TestErrorsCarryNoSecrets(t *testing.T) {
	secretish := "q8Zx3vT1u9Kp0LmN2bVc4XyW7aS5dF6gH"
	e := &endpoint{status: 500, contentType: "text/plain", body: "internal error for refresh_token=" + secretish}
	_, err := client().Token(context.Background(), e.start(t), Request{GrantType: GrantRefreshToken, ClientID: "cid", ClientSecret: secretish, RefreshToken: secretish})
	if err == nil || strings.Contains(err.Error(), secretish) {
		t.Fatalf("error %q leaks a token-like value", err)
	}
}

func TestErrorsCarryNoShortEchoedSecrets(t *testing.T) {
	for _, body := range []string{
		`{"error":"invalid_client","error_description":"bad secret hunter2!"}`,
		`{"error":"weird hunter2!"}`,
	} {
		for _, status := range []int{200, 401} {
			e := &endpoint{status: status, contentType: "application/json", body: body}
			_, err := client().Token(context.Background(), e.start(t), Request{GrantType: GrantClientCredentials, ClientID: "cid", ClientSecret: "hunter2!"})
			if err == nil || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("HTTP %d %s: error %q", status, body, err)
			}
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		header http.Header
		want   time.Duration
		from   string
	}{
		{"none", http.Header{}, 0, ""},
		{"Retry-After seconds", http.Header{"Retry-After": {"7"}}, 7 * time.Second, "Retry-After"},
		{"Retry-After HTTP date", http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, 90 * time.Second, "Retry-After"},
		{"Stora RateLimit-Reset epoch seconds", http.Header{"Ratelimit-Reset": {fmt.Sprint(now.Add(3 * time.Second).Unix())}, "Ratelimit-Limit": {"10"}}, 3 * time.Second, "RateLimit-Reset"},
		{"draft RateLimit-Reset delta seconds", http.Header{"Ratelimit-Reset": {"4"}}, 4 * time.Second, "RateLimit-Reset"},
		{"RateLimit-Reset of exactly 10^9 is an instant (in 2001), not 31 years", http.Header{"Ratelimit-Reset": {"1000000000"}}, 0, ""},
		{"reset in the past", http.Header{"Ratelimit-Reset": {fmt.Sprint(now.Add(-time.Minute).Unix())}}, 0, ""},
		{"absurd wait capped", http.Header{"Retry-After": {"999999"}}, 10 * time.Minute, "Retry-After"},
		{"garbage", http.Header{"Retry-After": {"soon"}}, 0, ""},
		{"Retry-After first", http.Header{"Retry-After": {"2"}, "Ratelimit-Reset": {"5"}}, 2 * time.Second, "Retry-After"},
	} {
		if got, from := retryAfter(tc.header, now); got != tc.want || from != tc.from {
			t.Errorf("%s: %v from %q, want %v from %q", tc.name, got, from, tc.want, tc.from)
		}
	}
}

func TestCutShortResponseIsATransportError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "500")
		w.WriteHeader(200)
		io.WriteString(w, `{"access_token":"half`)
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer srv.Close()
	_, err := client().Token(context.Background(), srv.URL, refresh)
	var te *TransportError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T), want *TransportError", err, err)
	}
}

func TestEchoedSecretsAreRemovedInEveryForm(t *testing.T) {
	secret := `Zq!9x#Lm"Pw/7Rk!Tv`
	jsonEscaped := `Zq!9x#Lm\"Pw/7Rk!Tv`
	for _, tc := range []struct{ name, contentType, body string }{
		{"JSON-escaped in a description", "application/json", `{"error":"invalid_client","error_description":"bad secret ` + jsonEscaped + `"}`},
		{"URL-encoded in text", "text/plain", "rejected client_secret=" + url.QueryEscape(secret)},
		{"at the cut", "text/plain", strings.Repeat("x", 110) + secret},
		{"at the cut, JSON", "application/json", `{"error":"invalid_client","error_description":"` + strings.Repeat("y", 190) + jsonEscaped + `"}`},
	} {
		e := &endpoint{status: 400, contentType: tc.contentType, body: tc.body}
		_, err := client().Token(context.Background(), e.start(t), Request{GrantType: GrantClientCredentials, ClientID: "cid", ClientSecret: secret})
		if err == nil {
			t.Fatal("no error")
		}
		for _, piece := range []string{"Zq!9x", "Zq%219x", "7Rk!Tv"} {
			if strings.Contains(err.Error(), piece) {
				t.Errorf("%s: error %q keeps %q", tc.name, err, piece)
			}
		}
	}
}

// TestUserAgent: the User-Agent the job sets (token-rotator/<version>) is the one the token
// endpoint sees, and a Client without one leaves Go's default in place rather than sending none.
func TestUserAgent(t *testing.T) {
	for _, tc := range []struct{ name, set, want string }{
		{"set", "token-rotator/1.2.3", "token-rotator/1.2.3"},
		{"unset", "", "Go-http-client/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &endpoint{status: 200, contentType: "application/json", body: `{"access_token":"at","token_type":"Bearer"}`}
			c := client()
			c.UserAgent = tc.set
			if _, err := c.Token(context.Background(), e.start(t), refresh); err != nil {
				t.Fatal(err)
			}
			if got := e.gotHeader.Get("User-Agent"); got != tc.want {
				t.Errorf("User-Agent %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDefaultHTTPClientTimesOut: a Client without an HTTP client of its own still gives up on a
// token endpoint that never answers, after the documented 30 seconds, instead of hanging a pass.
func TestDefaultHTTPClientTimesOut(t *testing.T) {
	if got := (&Client{}).httpClient().Timeout; got != 30*time.Second {
		t.Errorf("default timeout %v, want 30s", got)
	}
}

// TestRedactionEdges pins where the removal of echoed values starts and what order it goes in: a
// value of 4 characters is removed, one of 3 is left (it would shred the message), and a value
// that contains another (a client_id that begins the secret) is removed whole, leaving no tail.
func TestRedactionEdges(t *testing.T) {
	for _, tc := range []struct {
		name, description string
		req               Request
		gone, kept        string
	}{
		{"4-character secret removed", "bad secret Zq9! for client cid",
			Request{GrantType: GrantClientCredentials, ClientID: "cid", ClientSecret: "Zq9!"}, "Zq9!", "client cid"},
		{"secret that starts with the client_id removed whole", "bad secret acme-s3cr3t!",
			Request{GrantType: GrantClientCredentials, ClientID: "acme", ClientSecret: "acme-s3cr3t!"}, "s3cr3t", "bad secret [redacted]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &endpoint{status: 401, contentType: "application/json", body: `{"error":"invalid_client","error_description":"` + tc.description + `"}`}
			_, err := client().Token(context.Background(), e.start(t), tc.req)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), tc.gone) {
				t.Errorf("error %q keeps %q", err, tc.gone)
			}
			if !strings.Contains(err.Error(), tc.kept) {
				t.Errorf("error %q lost %q", err, tc.kept)
			}
		})
	}
}
