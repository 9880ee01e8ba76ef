package rotate

import "fmt"

// Keys of the Vault layout.
const (
	keyClientID     = "client_id"
	keyClientSecret = "client_secret"
	keyRefreshToken = "refresh_token"
	keyCode         = "code"
	keyRedirectURI  = "redirect_uri"
	keyCodeVerifier = "code_verifier"
	keyAccessToken  = "access_token"
	keyTokenType    = "token_type"
	keyExpiresAt    = "expires_at"
	keyScope        = "scope"
	// keyRefreshExpiresAt, in the credential secret, is when its refresh token expires (RFC 3339,
	// UTC), when the server said (refresh_token_expires_in); absent when it did not.
	keyRefreshExpiresAt = "refresh_token_expires_at"
)

// stringField returns data[key] when it is a string; "" when absent or null. Another type is an
// error naming the key, never the value.
func stringField(data map[string]any, key string) (string, error) {
	switch v := data[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", fmt.Errorf("key %s is a %T, not a string", key, v)
	}
}

// clone returns a shallow copy of data, never nil.
func clone(data map[string]any) map[string]any {
	c := make(map[string]any, len(data)+4)
	for k, v := range data {
		c[k] = v
	}
	return c
}
