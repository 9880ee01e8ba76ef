package oauth

import (
	"net/url"
	"testing"
)

// TestAuthorizationURL: the URL an operator opens carries every RFC 6749 §4.1.1 and RFC 7636
// parameter, keeps the authorize URL's own query, leaves scope out when there is none, and a URL
// that does not parse is an error rather than an empty link.
func TestAuthorizationURL(t *testing.T) {
	for _, tc := range []struct {
		name, scope string
		audience    string
		resources   []string
		want        url.Values
	}{
		{"with scope", "public.contact:read", "", nil, url.Values{"tenant": {"x"}, "response_type": {"code"}, "client_id": {"cid"}, "redirect_uri": {"https://app.test/cb"},
			"scope": {"public.contact:read"}, "state": {"st"}, "code_challenge": {"ch"}, "code_challenge_method": {"S256"}}},
		{"without scope", "", "", nil, url.Values{"tenant": {"x"}, "response_type": {"code"}, "client_id": {"cid"}, "redirect_uri": {"https://app.test/cb"},
			"state": {"st"}, "code_challenge": {"ch"}, "code_challenge_method": {"S256"}}},
		// RFC 8707 §2.1: the resources go to the authorization request too, one parameter each.
		{"with audience and resources", "", "https://api.test", []string{"https://a.test/", "https://b.test/x?y=1"}, url.Values{"tenant": {"x"}, "response_type": {"code"},
			"client_id": {"cid"}, "redirect_uri": {"https://app.test/cb"}, "state": {"st"}, "code_challenge": {"ch"}, "code_challenge_method": {"S256"},
			"audience": {"https://api.test"}, "resource": {"https://a.test/", "https://b.test/x?y=1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := AuthorizationURL("https://auth.test/oauth2/authorize?tenant=x", "cid", "https://app.test/cb", tc.scope, "st", "ch", tc.audience, tc.resources)
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			if u.Host != "auth.test" || u.Path != "/oauth2/authorize" || u.RawQuery != tc.want.Encode() {
				t.Errorf("URL %s, want host auth.test, path /oauth2/authorize, query %s", s, tc.want.Encode())
			}
		})
	}
	if s, err := AuthorizationURL("https://auth.test/%zz", "cid", "https://app.test/cb", "", "st", "ch", "", nil); err == nil {
		t.Errorf("unparsable authorize URL gave %q and no error", s)
	}
}

// TestVerifierAndState: PKCE verifiers are 43 characters (RFC 7636 §4.1), states 22, and no two
// are alike.
func TestVerifierAndState(t *testing.T) {
	v1, v2, s1, s2 := NewVerifier(), NewVerifier(), NewState(), NewState()
	if len(v1) != 43 || len(s1) != 22 || v1 == v2 || s1 == s2 {
		t.Errorf("verifiers %q %q, states %q %q", v1, v2, s1, s2)
	}
}
