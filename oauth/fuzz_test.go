package oauth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzParseToken feeds arbitrary bodies to the token response parser. Whatever the body, it must
// not panic, and a token it accepts must be complete and plausible: a printable access token, type
// Bearer, an expiry after the request and no later than the cap, a refresh token expiry unknown or
// after the request and no later than its cap. A refresh token it salvages from a
// refused response must be printable and not blank, and must not show in the error once cleaned.
// Seeds: testdata/fuzz/FuzzParseToken.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"at","token_type":"Bearer","expires_in":7200,"refresh_token":"rt","scope":"public.contact:read","created_at":1740235260}`,
		`{"access_token":"at","token_type":"bearer","expires_in":"7200"}`,
		`{"access_token":"at","token_type":"Bearer","expires_in":1740242460}`,
		`{"error":"invalid_grant","error_description":"revoked"}`,
		`{"access_token":"at","token_type":"Bearer","scope":["a","b"],"refresh_token":null}`,
		`<html>maintenance</html>`,
		`{"access_token":"at","token_type":"mac","expires_in":7200,"refresh_token":"bs51F__fUJgkQg2CjU8MyOHiQGhMupneZBkVfyefJYU"}`,
		`{"access_token":"at","token_type":"Bearer","refresh_token":"a","refresh_token":"b"}`,
		`{"access_token":"at","token_type":"Bearer","refresh_token":"rt","refresh_token_expires_in":15897600}`,
		`{"access_token":"at","token_type":"Bearer","refresh_token_expires_in":"1800000000"}`,
		"\uFEFF{\"error\":\"invalid_grant\"}",
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
			var pe *PartialTokenError
			if errors.As(err, &pe) {
				if !validToken(pe.RefreshToken) || pe.Err == nil || pe.Err.Snippet != "" {
					t.Fatalf("partial %#v keeps refresh token %q", pe, pe.RefreshToken)
				}
				pe.Err.clean(pe.RefreshToken)
				if tokenLike.MatchString(pe.RefreshToken) && strings.Contains(err.Error(), pe.RefreshToken) {
					t.Fatalf("error %q shows the refresh token", err)
				}
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
		if r := tok.RefreshExpiresAt; !r.IsZero() && (!r.After(sent) || r.After(sent.Add(MaxRefreshLifetime)) || r.Location() != time.UTC) {
			t.Fatalf("refresh token expiry %v outside (%v, %v]", r, sent, sent.Add(MaxRefreshLifetime))
		}
		if strings.ContainsAny(tok.Scope, "\n\r\t") || strings.Contains(tok.Scope, "  ") {
			t.Fatalf("scope %q not normalised", tok.Scope)
		}
	})
}
