// Package oauth is a client for an OAuth 2 token endpoint as the Stora Public API documents it
// (POST /oauth2/token, JSON body, client credentials in the body) and as Doorkeeper, the server
// behind it, behaves. It implements the three grants the rotation job uses: client_credentials,
// authorization_code (with an optional PKCE code_verifier, RFC 7636) and refresh_token
// (RFC 6749 §4.4, §4.1.3, §6).
//
// One call to Client.Token makes exactly one HTTP request; retrying is the caller's decision.
package oauth
