//go:build unix

package testenv

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
)

// fixture is what one compared request needs, set up the same way on each server.
type fixture struct {
	srv                         TokenServer
	id, secret                  string
	otherID, otherSecret        string
	code, pkceCode, verifier    string
	accessToken, refreshToken   string
	otherRefreshToken, unknownR string
}

func newFixture(t *testing.T, srv TokenServer) fixture {
	f := fixture{srv: srv, verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", unknownR: "no-such-refresh-token"}
	f.id, f.secret = srv.AddClient(t, dkRedirect, dkScopes)
	f.otherID, f.otherSecret = srv.AddClient(t, dkRedirect, dkScopes)
	f.code = srv.IssueCode(t, f.id, dkRedirect, dkScopes, "")
	f.pkceCode = srv.IssueCode(t, f.id, dkRedirect, dkScopes, s256(f.verifier))
	f.accessToken, f.refreshToken = srv.IssueTokenPair(t, f.id, dkScopes)
	_, f.otherRefreshToken = srv.IssueTokenPair(t, f.otherID, dkScopes)
	return f
}

// rawRequest is one HTTP request, built from a fixture.
type rawRequest struct {
	method, path, contentType, body string
	header                          http.Header
}

func jsonBody(m map[string]string) string { b, _ := json.Marshal(m); return string(b) }

func (f fixture) with(m map[string]string) map[string]string {
	m["client_id"], m["client_secret"] = f.id, f.secret
	return m
}

func post(body map[string]string) rawRequest {
	return rawRequest{method: "POST", path: "/oauth2/token", contentType: "application/json", body: jsonBody(body)}
}

// compareCases are the requests both servers must answer alike. pre requests run first, unchecked.
var compareCases = []struct {
	name string
	pre  func(f fixture) []rawRequest
	req  func(f fixture) rawRequest
}{
	{"client_credentials JSON", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "client_credentials", "scope": "public.contact:read"}))
	}},
	{"client_credentials form", nil, func(f fixture) rawRequest {
		v := url.Values{"grant_type": {"client_credentials"}, "client_id": {f.id}, "client_secret": {f.secret}}
		return rawRequest{method: "POST", path: "/oauth2/token", contentType: "application/x-www-form-urlencoded", body: v.Encode()}
	}},
	{"parameters in the query string", nil, func(f fixture) rawRequest {
		v := url.Values{"grant_type": {"client_credentials"}, "client_id": {f.id}, "client_secret": {f.secret}}
		return rawRequest{method: "POST", path: "/oauth2/token?" + v.Encode()}
	}},
	{"text/x-json", nil, func(f fixture) rawRequest {
		r := post(f.with(map[string]string{"grant_type": "client_credentials"}))
		r.contentType = "text/x-json"
		return r
	}},
	{"trailing slash", nil, func(f fixture) rawRequest {
		r := post(f.with(map[string]string{"grant_type": "client_credentials"}))
		r.path = "/oauth2/token/"
		return r
	}},
	{"Basic credentials", nil, func(f fixture) rawRequest {
		r := post(map[string]string{"grant_type": "client_credentials"})
		r.header = http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(f.id+":"+f.secret))}}
		return r
	}},
	{"wrong secret", nil, func(f fixture) rawRequest {
		return post(map[string]string{"grant_type": "client_credentials", "client_id": f.id, "client_secret": "wrong"})
	}},
	{"unknown client", nil, func(f fixture) rawRequest {
		return post(map[string]string{"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"})
	}},
	{"no credentials", nil, func(f fixture) rawRequest { return post(map[string]string{"grant_type": "client_credentials"}) }},
	{"unknown scope", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "client_credentials", "scope": "public.nothing:read"}))
	}},
	{"scope outside the application's", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "client_credentials", "scope": "public.invoice:read"}))
	}},
	{"duplicate scopes", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "client_credentials", "scope": "public.contact:read  public.contact:read"}))
	}},
	{"no grant_type", nil, func(f fixture) rawRequest { return post(f.with(map[string]string{})) }},
	{"unsupported grant_type", nil, func(f fixture) rawRequest { return post(f.with(map[string]string{"grant_type": "password"})) }},
	{"JSON array", nil, func(f fixture) rawRequest {
		return rawRequest{method: "POST", path: "/oauth2/token", contentType: "application/json", body: `[1,2]`}
	}},
	{"JSON without a content type", nil, func(f fixture) rawRequest {
		return rawRequest{method: "POST", path: "/oauth2/token", body: jsonBody(f.with(map[string]string{"grant_type": "client_credentials"}))}
	}},
	{"authorization_code", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.code, "redirect_uri": dkRedirect}))
	}},
	{"authorization_code reused", func(f fixture) []rawRequest {
		return []rawRequest{post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.code, "redirect_uri": dkRedirect}))}
	}, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.code, "redirect_uri": dkRedirect}))
	}},
	{"authorization_code, other redirect_uri", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.code, "redirect_uri": "http://localhost:1/x"}))
	}},
	{"authorization_code without redirect_uri", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.code}))
	}},
	{"authorization_code, another client's credentials", nil, func(f fixture) rawRequest {
		return post(map[string]string{"grant_type": "authorization_code", "code": f.code, "redirect_uri": dkRedirect, "client_id": f.otherID, "client_secret": f.otherSecret})
	}},
	{"authorization_code, wrong secret", nil, func(f fixture) rawRequest {
		return post(map[string]string{"grant_type": "authorization_code", "code": f.code, "redirect_uri": dkRedirect, "client_id": f.id, "client_secret": "wrong"})
	}},
	{"verifier for a code without challenge", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.code, "redirect_uri": dkRedirect, "code_verifier": f.verifier}))
	}},
	{"PKCE", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.pkceCode, "redirect_uri": dkRedirect, "code_verifier": f.verifier}))
	}},
	{"PKCE without verifier", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.pkceCode, "redirect_uri": dkRedirect}))
	}},
	{"PKCE without verifier nor redirect_uri", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.pkceCode}))
	}},
	{"PKCE, wrong verifier", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "authorization_code", "code": f.pkceCode, "redirect_uri": dkRedirect, "code_verifier": f.verifier + "x"}))
	}},
	{"refresh", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "refresh_token", "refresh_token": f.refreshToken}))
	}},
	{"refresh token reused", func(f fixture) []rawRequest {
		return []rawRequest{post(f.with(map[string]string{"grant_type": "refresh_token", "refresh_token": f.refreshToken}))}
	}, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "refresh_token", "refresh_token": f.refreshToken}))
	}},
	{"refresh, narrower scope", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "refresh_token", "refresh_token": f.refreshToken, "scope": "public.contact:read"}))
	}},
	{"refresh, wider scope", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "refresh_token", "refresh_token": f.refreshToken, "scope": "public.invoice:read"}))
	}},
	{"refresh, unknown token, wrong secret", nil, func(f fixture) rawRequest {
		return post(map[string]string{"grant_type": "refresh_token", "refresh_token": f.unknownR, "client_id": f.id, "client_secret": "wrong"})
	}},
	{"refresh, wrong secret", nil, func(f fixture) rawRequest {
		return post(map[string]string{"grant_type": "refresh_token", "refresh_token": f.refreshToken, "client_id": f.id, "client_secret": "wrong"})
	}},
	{"refresh without credentials", nil, func(f fixture) rawRequest {
		return post(map[string]string{"grant_type": "refresh_token", "refresh_token": f.refreshToken})
	}},
	{"refresh with a secret but no client_id", nil, func(f fixture) rawRequest {
		return post(map[string]string{"grant_type": "refresh_token", "refresh_token": f.refreshToken, "client_secret": f.secret})
	}},
	{"refresh, another client's token", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "refresh_token", "refresh_token": f.otherRefreshToken}))
	}},
	{"refresh without refresh_token", nil, func(f fixture) rawRequest {
		return post(f.with(map[string]string{"grant_type": "refresh_token"}))
	}},
	{"GET on the token endpoint", nil, func(f fixture) rawRequest { return rawRequest{method: "GET", path: "/oauth2/token"} }},
	{"token info, bearer header", nil, func(f fixture) rawRequest {
		return rawRequest{method: "GET", path: "/oauth2/token/info", header: http.Header{"Authorization": {"Bearer " + f.accessToken}}}
	}},
	{"token info, query parameter", nil, func(f fixture) rawRequest {
		return rawRequest{method: "GET", path: "/oauth2/token/info?access_token=" + f.accessToken}
	}},
	{"token info, unknown token", nil, func(f fixture) rawRequest {
		return rawRequest{method: "GET", path: "/oauth2/token/info", header: http.Header{"Authorization": {"Bearer nope"}}}
	}},
	{"token info, no token", nil, func(f fixture) rawRequest { return rawRequest{method: "GET", path: "/oauth2/token/info"} }},
}

// answer is the part of a response both servers must agree on: everything but the random values.
type answer struct {
	Status                        int
	ContentType                   string
	CacheControl, Pragma, WWWAuth string
	Keys                          string
	Error, Description, TokenType string
	ExpiresIn                     any
	Scope                         any
}

func send(t *testing.T, base string, r rawRequest) answer {
	t.Helper()
	req, err := http.NewRequest(r.method, base+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	resp, err := testHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode, CacheControl: resp.Header.Get("Cache-Control"), Pragma: resp.Header.Get("Pragma"),
		WWWAuth: resp.Header.Get("WWW-Authenticate")}
	if a.Status == 404 {
		return answer{Status: 404} // Rails' and Go's not-found pages differ, and nobody parses them
	}
	a.ContentType, _, _ = mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var body map[string]any
	if json.Unmarshal(data, &body) == nil {
		var keys []string
		for k := range body {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		a.Keys = strings.Join(keys, ",")
		a.Error, _ = body["error"].(string)
		a.Description, _ = body["error_description"].(string)
		a.TokenType, _ = body["token_type"].(string)
		a.ExpiresIn, a.Scope = body["expires_in"], body["scope"]
	} else if len(data) > 0 {
		a.Keys = "(not JSON)"
	}
	return a
}

// TestFakeMatchesDoorkeeper sends each request to the real Doorkeeper and to the fake, set up
// alike, in both revocation modes, and requires the same answer from both: status, error and
// description, the keys of the body, token type, expires_in and scope, and the headers clients
// read. Only random values (tokens, ids, times) may differ.
func TestFakeMatchesDoorkeeper(t *testing.T) {
	for _, immediate := range []bool{false, true} {
		t.Run(modeName(immediate), func(t *testing.T) {
			t.Parallel()
			real := StartTokenServer(t, "doorkeeper", immediate)
			fake := StartTokenServer(t, "fake", immediate)
			for _, tc := range compareCases {
				t.Run(tc.name, func(t *testing.T) {
					var got [2]answer
					for i, srv := range []TokenServer{real, fake} {
						f := newFixture(t, srv)
						if tc.pre != nil {
							for _, r := range tc.pre(f) {
								send(t, srv.Base(), r)
							}
						}
						got[i] = send(t, srv.Base(), tc.req(f))
					}
					if fmt.Sprintf("%+v", got[0]) != fmt.Sprintf("%+v", got[1]) {
						t.Errorf("answers differ\n  doorkeeper: %+v\n  fake:       %+v", got[0], got[1])
					}
				})
			}
		})
	}
}
