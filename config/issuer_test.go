package config

import (
	"strings"
	"testing"
)

// TestIssuer: issuer names the authorization server whose metadata gives the endpoints, at the
// top level (for clients that name no endpoint of their own) and per client; a client's own
// token_url or issuer wins over the top-level issuer.
func TestIssuer(t *testing.T) {
	c, err := Parse("c.yaml", []byte(`issuer: https://auth.example.com
clients:
  - {name: global, grant: authorization_code, secret: a}
  - {name: own-token, grant: authorization_code, secret: b, token_url: https://public-api.stora.co/oauth2/token}
  - {name: own-issuer, grant: client_credentials, scope: x, secret: c, issuer: http://127.0.0.1:9/realms/x}
  - {name: own-authorize, grant: authorization_code, secret: d, authorize_url: https://sso.example.com/authorize}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenURL != "" || c.Issuer != "https://auth.example.com" || c.AuthorizeURL != "" {
		t.Errorf("top level: token_url %q, issuer %q, authorize_url %q; want no Stora default beside an issuer", c.TokenURL, c.Issuer, c.AuthorizeURL)
	}
	for name, want := range map[string][3]string{ // issuer, token URL, authorize URL
		"global":        {"https://auth.example.com", "", ""},
		"own-token":     {"", "https://public-api.stora.co/oauth2/token", "https://public-api.stora.co/oauth2/authorize"},
		"own-issuer":    {"http://127.0.0.1:9/realms/x", "", ""},
		"own-authorize": {"https://auth.example.com", "", "https://sso.example.com/authorize"},
	} {
		cl := c.Client(name)
		if got := [3]string{cl.Issuer, cl.TokenURL, cl.AuthorizeURL}; got != want {
			t.Errorf("%s: issuer, token_url, authorize_url = %q, want %q", name, got, want)
		}
	}
	// Without an issuer, the default stays Stora's.
	c, err = Parse("c.yaml", []byte("clients:\n  - {name: a, grant: authorization_code, secret: s, issuer: https://auth.example.com}\n  - {name: b, grant: authorization_code, secret: t}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenURL != DefaultTokenURL || c.Client("b").TokenURL != DefaultTokenURL || c.Client("b").Issuer != "" || c.Client("a").TokenURL != "" {
		t.Errorf("token URLs %q, %q, %q; want Stora's default for all but the client with an issuer", c.TokenURL, c.Client("b").TokenURL, c.Client("a").TokenURL)
	}
}

func TestIssuerErrors(t *testing.T) {
	client := "clients:\n  - {name: a, grant: authorization_code, secret: s}\n"
	for _, tc := range []struct{ yaml, want string }{
		{"issuer: https://auth.example.com\ntoken_url: https://auth.example.com/token\n" + client,
			"c.yaml:1:9: issuer: issuer and token_url together: name one"},
		{"clients:\n  - {name: a, grant: authorization_code, secret: s, issuer: https://auth.example.com, token_url: https://auth.example.com/token}\n",
			"c.yaml:2:61: clients[0].issuer: issuer and token_url together: name one"},
		{"issuer: http://auth.example.com\n" + client,
			`c.yaml:1:9: issuer: "http://auth.example.com": http is allowed only to a loopback address; use https`},
		{"clients:\n  - {name: a, grant: authorization_code, secret: s, issuer: ftp://auth.example.com}\n",
			`c.yaml:2:61: clients[0].issuer: "ftp://auth.example.com": scheme must be https`},
		{"issuer: auth.example.com\n" + client, `c.yaml:1:9: issuer: "auth.example.com" is not an absolute URL`},
		{"issuer: https://auth.example.com/?tenant=1\n" + client, "c.yaml:1:9: issuer: \"https://auth.example.com/?tenant=1\": an issuer has no query or fragment (RFC 8414 §2)"},
		{"issuer: 'https://auth.example.com/#x'\n" + client, "an issuer has no query or fragment"},
		{"issuer: https://user:hunter2@auth.example.com\n" + client, `c.yaml:1:9: issuer: "https://user:xxxxx@auth.example.com": an issuer has no user info`},
		// Present but empty, as a template's variable set but empty gives: an error, never
		// Stora's endpoint by default, where another provider's secrets would go.
		{"token_url: \"\"\n" + client, "c.yaml:1:12: token_url: is empty: give the token endpoint's URL, or leave token_url out for Stora's"},
		{"token_url: ${TR_TEST_EMPTY:-}\n" + client, "token_url: is empty"},
		{"issuer: ''\n" + client, "c.yaml:1:9: issuer: is empty"},
	} {
		_, err := Parse("c.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %s", tc.yaml, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}
