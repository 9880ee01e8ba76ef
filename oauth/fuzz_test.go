package oauth

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseToken feeds arbitrary bodies to the token response parser. Whatever the body, it must
// not panic, and a token it accepts must be complete and plausible: a printable access token, type
// Bearer, an expiry after the request and no later than the cap. Seeds: testdata/fuzz/FuzzParseToken.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"at","token_type":"Bearer","expires_in":7200,"refresh_token":"rt","scope":"public.contact:read","created_at":1740235260}`,
		`{"access_token":"at","token_type":"bearer","expires_in":"7200"}`,
		`{"access_token":"at","token_type":"Bearer","expires_in":1740242460}`,
		`{"error":"invalid_grant","error_description":"revoked"}`,
		`{"access_token":"at","token_type":"Bearer","scope":["a","b"],"refresh_token":null}`,
		`<html>maintenance</html>`,
		``,
	} {
		f.Add([]byte(s))
	}
	life := Lifetimes{Default: 2 * time.Hour, Max: 24 * time.Hour}
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := parseToken(body, sent, life)
		if err != nil {
			if tok != nil {
				t.Fatalf("a token and an error")
			}
			return
		}
		if !validToken(tok.AccessToken) || tok.TokenType != "Bearer" {
			t.Fatalf("accepted access token %q type %q", tok.AccessToken, tok.TokenType)
		}
		if tok.RefreshToken != "" && !validToken(tok.RefreshToken) {
			t.Fatalf("accepted refresh token %q", tok.RefreshToken)
		}
		if !tok.ExpiresAt.After(sent) || tok.ExpiresAt.After(sent.Add(life.Max)) {
			t.Fatalf("expiry %v outside (%v, %v]", tok.ExpiresAt, sent, sent.Add(life.Max))
		}
		if strings.ContainsAny(tok.Scope, "\n\r\t") || strings.Contains(tok.Scope, "  ") {
			t.Fatalf("scope %q not normalised", tok.Scope)
		}
	})
}
