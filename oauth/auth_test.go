package oauth

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// rawEndpoint records the exact bytes and headers of each request and answers with a token.
type rawEndpoint struct {
	bodies  []string
	headers []http.Header
}

func (e *rawEndpoint) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		e.bodies = append(e.bodies, string(b))
		e.headers = append(e.headers, r.Header.Clone())
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"at","token_type":"Bearer","expires_in":7200,"refresh_token":"rt-new"}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/oauth2/token"
}

// The default request (no AuthMethod, no Encoding) is today's Stora request byte for byte, and
// naming the defaults changes nothing.
func TestDefaultRequestBytesUnchanged(t *testing.T) {
	for _, r := range []Request{refresh, {GrantType: GrantRefreshToken, ClientID: "cid", ClientSecret: "csecret", RefreshToken: "rt-old",
		AuthMethod: AuthClientSecretPost, Encoding: EncodingJSON}} {
		e := &rawEndpoint{}
		if _, err := client().Token(context.Background(), e.start(t), r); err != nil {
			t.Fatal(err)
		}
		want := `{"client_id":"cid","client_secret":"csecret","grant_type":"refresh_token","refresh_token":"rt-old"}`
		if e.bodies[0] != want {
			t.Errorf("body %s\nwant %s", e.bodies[0], want)
		}
		h := e.headers[0]
		if h.Get("Content-Type") != "application/json" || h.Get("Accept") != "application/json" || h.Get("Authorization") != "" {
			t.Errorf("headers %v", h)
		}
	}
}

func TestRequestBytesPerAuthMethodAndEncoding(t *testing.T) {
	// An id and a secret with characters RFC 6749 Appendix B encodes: space, ':', '+', '%', '/', '&'.
	const id, secret = "my client:1", "s3 cr+t%/&x"
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("my+client%3A1:s3+cr%2Bt%25%2F%26x"))
	cc := Request{GrantType: GrantClientCredentials, ClientID: id, ClientSecret: secret, Scope: "a b"}
	rt := Request{GrantType: GrantRefreshToken, ClientID: id, ClientSecret: secret, RefreshToken: "r t"}
	code := Request{GrantType: GrantAuthorizationCode, ClientID: id, ClientSecret: secret, Code: "k", RedirectURI: "https://a.test/cb?x=1", CodeVerifier: "v"}
	with := func(r Request, method, enc string) Request { r.AuthMethod, r.Encoding = method, enc; return r }
	for _, tc := range []struct {
		name        string
		req         Request
		body        string
		contentType string
		auth        string
	}{
		{"post json client_credentials", with(cc, AuthClientSecretPost, EncodingJSON),
			`{"client_id":"my client:1","client_secret":"s3 cr+t%/\u0026x","grant_type":"client_credentials","scope":"a b"}`, "application/json", ""},
		{"post form client_credentials", with(cc, AuthClientSecretPost, EncodingForm),
			`client_id=my+client%3A1&client_secret=s3+cr%2Bt%25%2F%26x&grant_type=client_credentials&scope=a+b`, "application/x-www-form-urlencoded", ""},
		{"basic json client_credentials", with(cc, AuthClientSecretBasic, EncodingJSON),
			`{"grant_type":"client_credentials","scope":"a b"}`, "application/json", basic},
		{"basic form client_credentials", with(cc, AuthClientSecretBasic, EncodingForm),
			`grant_type=client_credentials&scope=a+b`, "application/x-www-form-urlencoded", basic},
		{"basic form refresh", with(rt, AuthClientSecretBasic, EncodingForm),
			`grant_type=refresh_token&refresh_token=r+t`, "application/x-www-form-urlencoded", basic},
		{"basic json code", with(code, AuthClientSecretBasic, ""),
			`{"code":"k","code_verifier":"v","grant_type":"authorization_code","redirect_uri":"https://a.test/cb?x=1"}`, "application/json", basic},
		{"none json refresh: secret stored, not sent", with(rt, AuthNone, EncodingJSON),
			`{"client_id":"my client:1","grant_type":"refresh_token","refresh_token":"r t"}`, "application/json", ""},
		{"none form code with PKCE", with(code, AuthNone, EncodingForm),
			`client_id=my+client%3A1&code=k&code_verifier=v&grant_type=authorization_code&redirect_uri=https%3A%2F%2Fa.test%2Fcb%3Fx%3D1`, "application/x-www-form-urlencoded", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &rawEndpoint{}
			if _, err := client().Token(context.Background(), e.start(t), tc.req); err != nil {
				t.Fatal(err)
			}
			if e.bodies[0] != tc.body {
				t.Errorf("body %s\nwant %s", e.bodies[0], tc.body)
			}
			h := e.headers[0]
			if h.Get("Content-Type") != tc.contentType || h.Get("Accept") != "application/json" {
				t.Errorf("Content-Type %q Accept %q, want %q", h.Get("Content-Type"), h.Get("Accept"), tc.contentType)
			}
			if h.Get("Authorization") != tc.auth {
				t.Errorf("Authorization %q, want %q", h.Get("Authorization"), tc.auth)
			}
		})
	}
}

func TestAuthMethodRefusalsSendNothing(t *testing.T) {
	e := &rawEndpoint{}
	url := e.start(t)
	for _, r := range []Request{
		{GrantType: GrantClientCredentials, ClientID: "c", Scope: "s", AuthMethod: AuthNone},
		{GrantType: GrantAuthorizationCode, ClientID: "c", Code: "k", RedirectURI: "https://a.test", AuthMethod: AuthNone},
		{GrantType: GrantRefreshToken, ClientID: "c", RefreshToken: "r", AuthMethod: AuthClientSecretBasic},
		{GrantType: GrantRefreshToken, ClientID: "c", ClientSecret: "s", RefreshToken: "r", AuthMethod: "private_key_jwt"},
		{GrantType: GrantRefreshToken, ClientID: "c", ClientSecret: "s", RefreshToken: "r", Encoding: "xml"},
	} {
		if _, err := client().Token(context.Background(), url, r); err == nil {
			t.Errorf("%+v: no error", r)
		}
	}
	if len(e.bodies) != 0 {
		t.Errorf("%d requests sent", len(e.bodies))
	}
}

// A server that echoes the Basic header, its base64 or the form-encoded secret into an error
// does not get them into our error text.
func TestBasicCredentialsNeverInErrors(t *testing.T) {
	const id, secret = "client-id-1", "very secret/value+1"
	basic := basicAuthorization(id, secret)
	for _, echo := range []string{basic, strings.TrimPrefix(basic, "Basic "), "very+secret%2Fvalue%2B1", secret} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			io.WriteString(w, `{"error":"invalid_client","error_description":"bad `+strings.ReplaceAll(echo, "/", `\/`)+`"}`)
		}))
		_, err := client().Token(context.Background(), srv.URL, Request{GrantType: GrantClientCredentials, ClientID: id, ClientSecret: secret,
			Scope: "s", AuthMethod: AuthClientSecretBasic, Encoding: EncodingForm})
		srv.Close()
		if err == nil {
			t.Fatal("no error")
		}
		for _, s := range []string{secret, "very+secret", strings.TrimPrefix(basic, "Basic "), "value%2B1"} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error %q contains %q", err, s)
			}
		}
	}
}

// audience and resource (RFC 8707) go with every grant, in each encoding: JSON sends one resource
// as a string and several as an array; a form repeats resource=. Absent, nothing is added (the
// cases above and TestDefaultRequestBytesUnchanged).
func TestAudienceAndResourceBytes(t *testing.T) {
	one := []string{"https://api.test/v1"}
	two := []string{"https://a.test/", "urn:example:b?x=1&y=2"}
	cc := Request{GrantType: GrantClientCredentials, ClientID: "cid", ClientSecret: "cs", Scope: "s"}
	rt := Request{GrantType: GrantRefreshToken, ClientID: "cid", ClientSecret: "cs", RefreshToken: "r"}
	code := Request{GrantType: GrantAuthorizationCode, ClientID: "cid", ClientSecret: "cs", Code: "k", RedirectURI: "https://a.test/cb"}
	with := func(r Request, enc, aud string, res []string) Request {
		r.Encoding, r.Audience, r.Resources = enc, aud, res
		return r
	}
	for _, tc := range []struct {
		name string
		req  Request
		body string
	}{
		{"json client_credentials audience", with(cc, "", "https://api.test", nil),
			`{"audience":"https://api.test","client_id":"cid","client_secret":"cs","grant_type":"client_credentials","scope":"s"}`},
		{"json refresh one resource", with(rt, EncodingJSON, "", one),
			`{"client_id":"cid","client_secret":"cs","grant_type":"refresh_token","refresh_token":"r","resource":"https://api.test/v1"}`},
		{"json code two resources and audience", with(code, EncodingJSON, "aud", two),
			`{"audience":"aud","client_id":"cid","client_secret":"cs","code":"k","grant_type":"authorization_code","redirect_uri":"https://a.test/cb","resource":["https://a.test/","urn:example:b?x=1\u0026y=2"]}`},
		{"form client_credentials two resources", with(cc, EncodingForm, "", two),
			`client_id=cid&client_secret=cs&grant_type=client_credentials&resource=https%3A%2F%2Fa.test%2F&resource=urn%3Aexample%3Ab%3Fx%3D1%26y%3D2&scope=s`},
		{"form refresh audience and one resource", with(rt, EncodingForm, "my api", one),
			`audience=my+api&client_id=cid&client_secret=cs&grant_type=refresh_token&refresh_token=r&resource=https%3A%2F%2Fapi.test%2Fv1`},
		{"form code audience", with(code, EncodingForm, "aud", nil),
			`audience=aud&client_id=cid&client_secret=cs&code=k&grant_type=authorization_code&redirect_uri=https%3A%2F%2Fa.test%2Fcb`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &rawEndpoint{}
			if _, err := client().Token(context.Background(), e.start(t), tc.req); err != nil {
				t.Fatal(err)
			}
			if e.bodies[0] != tc.body {
				t.Errorf("body %s\nwant %s", e.bodies[0], tc.body)
			}
		})
	}
}
