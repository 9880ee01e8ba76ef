package config

import (
	"slices"
	"strings"
	"testing"
)

func TestTokenEndpointAuthMethodAndEncoding(t *testing.T) {
	c, err := Parse("c.yaml", []byte(`token_endpoint_auth_method: client_secret_basic
token_request_encoding: form
clients:
  - {name: inherits, grant: client_credentials, scope: x, secret: a}
  - {name: own, grant: authorization_code, secret: b, token_endpoint_auth_method: none, token_request_encoding: json}
  - {name: post, grant: authorization_code, secret: c, token_endpoint_auth_method: client_secret_post}
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][2]string{
		"inherits": {"client_secret_basic", "form"},
		"own":      {"none", "json"},
		"post":     {"client_secret_post", "form"},
	} {
		if cl := c.Client(name); cl.AuthMethod != want[0] || cl.Encoding != want[1] {
			t.Errorf("%s: %s %s, want %v", name, cl.AuthMethod, cl.Encoding, want)
		}
	}
	// Stora's request when nothing is said.
	d, err := Parse("c.yaml", []byte("clients:\n  - {name: a, grant: authorization_code, secret: s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cl := d.Client("a"); d.AuthMethod != "client_secret_post" || d.Encoding != "json" || cl.AuthMethod != "client_secret_post" || cl.Encoding != "json" {
		t.Errorf("defaults %s %s, client %s %s", d.AuthMethod, d.Encoding, cl.AuthMethod, cl.Encoding)
	}
}

func TestTokenEndpointAuthMethodErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"token_endpoint_auth_method: private_key_jwt\nclients:\n  - {name: a, grant: authorization_code, secret: s}\n",
			`c.yaml:1:29: token_endpoint_auth_method: unknown method "private_key_jwt" (want client_secret_post, client_secret_basic or none)`},
		{"token_request_encoding: xml\nclients:\n  - {name: a, grant: authorization_code, secret: s}\n",
			`c.yaml:1:25: token_request_encoding: unknown encoding "xml" (want json or form)`},
		{"clients:\n  - {name: a, grant: authorization_code, secret: s, token_endpoint_auth_method: basic}\n",
			`c.yaml:2:81: clients[0].token_endpoint_auth_method: unknown method "basic"`},
		{"clients:\n  - {name: a, grant: authorization_code, secret: s, token_request_encoding: urlencoded}\n",
			`c.yaml:2:77: clients[0].token_request_encoding: unknown encoding "urlencoded"`},
		{"clients:\n  - {name: a, grant: client_credentials, scope: x, secret: s, token_endpoint_auth_method: none}\n",
			"c.yaml:2:91: clients[0].token_endpoint_auth_method: a public client (token_endpoint_auth_method none) has no secret to use the client_credentials grant with"},
		{"token_endpoint_auth_method: none\nclients:\n  - {name: a, grant: client_credentials, scope: x, secret: s}\n",
			"c.yaml:3:22: clients[0].grant: a public client (token_endpoint_auth_method none) has no secret"},
	} {
		if _, err := Parse("c.yaml", []byte(tc.yaml)); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("got  %v\nwant %s", err, tc.want)
		}
	}
}

// audience and resource: top-level defaults, a client's own value replacing them, one resource
// as a string or several as a list; nothing said, nothing sent.
func TestAudienceAndResource(t *testing.T) {
	c, err := Parse("c.yaml", []byte(`audience: https://api.test
resource: https://api.test/
clients:
  - {name: inherits, grant: client_credentials, scope: x, secret: a}
  - {name: own, grant: authorization_code, secret: b, audience: other, resource: [https://a.test/, "urn:example:b?x=1"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cl := c.Client("inherits"); cl.Audience != "https://api.test" || !slices.Equal(cl.Resources, []string{"https://api.test/"}) {
		t.Errorf("inherits: %q %q", cl.Audience, cl.Resources)
	}
	if cl := c.Client("own"); cl.Audience != "other" || !slices.Equal(cl.Resources, []string{"https://a.test/", "urn:example:b?x=1"}) {
		t.Errorf("own: %q %q", cl.Audience, cl.Resources)
	}
	d, err := Parse("c.yaml", []byte("clients:\n  - {name: a, grant: authorization_code, secret: s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cl := d.Client("a"); cl.Audience != "" || cl.Resources != nil {
		t.Errorf("defaults: %q %q", cl.Audience, cl.Resources)
	}
}

func TestResourceErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"resource: api.test/x\nclients:\n  - {name: a, grant: authorization_code, secret: s}\n",
			`c.yaml:1:11: resource: "api.test/x" is not an absolute URI (RFC 8707 §2)`},
		{"clients:\n  - {name: acme, grant: authorization_code, secret: s, resource: 'https://api.test/#frag'}\n",
			`c.yaml:2:66: clients[0].resource: client "acme": "https://api.test/#frag" has a fragment; a resource indicator must not (RFC 8707 §2)`},
		{"clients:\n  - name: acme\n    grant: authorization_code\n    secret: s\n    resource:\n      - https://ok.test/\n      - /relative\n",
			`c.yaml:7:9: clients[0].resource[1]: client "acme": "/relative" is not an absolute URI`},
		{"clients:\n  - {name: acme, grant: authorization_code, secret: s, resource: ''}\n",
			`c.yaml:2:66: clients[0].resource: client "acme": is empty`},
		{"clients:\n  - {name: acme, grant: authorization_code, secret: s, resource: 42}\n",
			`c.yaml:2:66: clients[0].resource: want a string or a list of strings (put it in quotes)`},
		{"clients:\n  - {name: acme, grant: authorization_code, secret: s, resource: {a: b}}\n",
			`c.yaml:2:67: clients[0].resource: want a string or a list of strings`},
		{"clients:\n  - {name: acme, grant: authorization_code, secret: s, audience: [a]}\n",
			`c.yaml:2:66: clients[0].audience: want a string`},
	} {
		if _, err := Parse("c.yaml", []byte(tc.yaml)); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("got  %v\nwant %s", err, tc.want)
		}
	}
}
