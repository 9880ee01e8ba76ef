package oauth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// doorkeeperToken has the shape of a Doorkeeper token: 43 characters of URL-safe base64.
const doorkeeperToken = "Qx7_kP2-vN9mRt4LwZ8aYc3Jd6Hs1Fg5Eb0Ui-Op_Tn"

// keepsPieceOf returns the first run of at least 8 characters of secret found in s: a piece
// that long identifies the secret, and no text the client writes has one by chance.
func keepsPieceOf(s, secret string) string {
	for i := 0; i+8 <= len(secret); i++ {
		if strings.Contains(s, secret[i:i+8]) {
			return secret[i : i+8]
		}
	}
	return ""
}

// TestServerTextIsRedactedBeforeItIsCut puts a token at every offset around the point where each
// piece of server text is cut (the snippet at 120 bytes, error_description at 200, the error code
// at 64, a token_type at 20, a duplicated member's name at 40) and checks that no piece of it
// reaches the error, where it would be logged and written to Vault metadata.
func TestServerTextIsRedactedBeforeItIsCut(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		cut    int
		body   func(prefix string) string
	}{
		{"snippet", 500, 120, func(p string) string { return p + doorkeeperToken + " end" }},
		{"error_description", 400, 200, func(p string) string {
			return `{"error":"invalid_request","error_description":"` + p + doorkeeperToken + ` end"}`
		}},
		{"error code", 400, 64, func(p string) string { return `{"error":"` + p + doorkeeperToken + `"}` }},
		{"token_type", 200, 20, func(p string) string {
			return `{"access_token":"at","token_type":"` + p + doorkeeperToken + `"}`
		}},
		{"member named twice", 200, 40, func(p string) string {
			return `{"access_token":"at","token_type":"Bearer","` + p + doorkeeperToken + `":1,"` + p + doorkeeperToken + `":2}`
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &endpoint{status: tc.status, contentType: "application/json"}
			url := e.start(t)
			for n := 0; n <= tc.cut+10; n++ {
				e.body = tc.body(strings.Repeat("ab ", n)[:n]) // words too short to look like tokens
				_, err := client().Token(context.Background(), url, refresh)
				var oe *Error
				if !errors.As(err, &oe) {
					t.Fatalf("token at offset %d: error %v (%T), want *Error", n, err, err)
				}
				if piece := keepsPieceOf(err.Error(), doorkeeperToken); piece != "" {
					t.Errorf("token at offset %d: error %q keeps %q", n, err, piece)
				}
				for _, f := range []string{oe.Code, oe.Description, oe.Snippet, oe.Reason} {
					if !utf8.ValidString(f) {
						t.Errorf("token at offset %d: field %q is not valid UTF-8", n, f)
					}
				}
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"short text kept", "invalid grant", 120, "invalid grant"},
		{"token removed", "bad token " + doorkeeperToken + " here", 120, "bad token [redacted] here"},
		{"token across the cut removed whole", "bad token " + doorkeeperToken, 20, "bad token [redacted]"},
		{"cut after redaction", "bad token " + doorkeeperToken + " and more", 15, "bad token [reda"},
		{"15 characters are not a token", "abcdefghijklmno", 120, "abcdefghijklmno"},
		{"cut inside a rune keeps valid UTF-8", "ééé", 3, "é"},
		{"invalid UTF-8 dropped", "a\xffb", 10, "ab"},
	} {
		if got := Redact(tc.in, tc.max); got != tc.want {
			t.Errorf("%s: Redact(%q, %d) = %q, want %q", tc.name, tc.in, tc.max, got, tc.want)
		}
	}
}
