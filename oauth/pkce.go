package oauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
)

// NewVerifier returns a PKCE code_verifier: 43 characters of URL-safe base64 from 32 random bytes
// (RFC 7636 §4.1). It is a secret until the code is exchanged.
func NewVerifier() string { return randomString(32) }

// NewState returns a random OAuth 2 state value (RFC 6749 §10.12): 22 URL-safe characters.
func NewState() string { return randomString(16) }

// Challenge is the S256 code_challenge of a verifier (RFC 7636 §4.2).
func Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// AuthorizationURL is where an operator approves a partner (RFC 6749 §4.1.1, with PKCE S256):
// authorizeURL with response_type=code, client_id, redirect_uri, scope, state, code_challenge and
// code_challenge_method, and audience and one resource per URI when set (RFC 8707 §2.1). The
// client_id is public; nothing secret goes into the URL.
func AuthorizationURL(authorizeURL, clientID, redirectURI, scope, state, challenge, audience string, resources []string) (string, error) {
	u, err := url.Parse(authorizeURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("response_type", "code")
	q.Set("client_id", clientID)
	q.Set("redirect_uri", redirectURI)
	if scope != "" {
		q.Set("scope", scope)
	}
	q.Set("state", state)
	q.Set("code_challenge", challenge)
	q.Set("code_challenge_method", "S256")
	if audience != "" {
		q.Set("audience", audience)
	}
	if len(resources) > 0 {
		q["resource"] = resources
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
