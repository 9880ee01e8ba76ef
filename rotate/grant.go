package rotate

import (
	"errors"
	"fmt"

	"token-rotator/config"
	"token-rotator/oauth"
)

// request picks the grant for a target from its client's configuration, the client credentials
// (client_id, client_secret) and its secret's data, and builds the token request. An authorization_code client with a code waiting is an onboarding (or a
// re-authorization): the code is exchanged, even if a refresh token is also stored. Otherwise its
// refresh token is used. Errors name the missing or malformed key, never a value.
func request(c config.Client, credentials, secret map[string]any) (oauth.Request, error) {
	var r oauth.Request
	var err error
	from := func(data map[string]any, key string) string {
		v, e := stringField(data, key)
		err = errors.Join(err, e)
		return v
	}
	get := func(key string) string { return from(secret, key) }
	r.AuthMethod, r.Encoding, r.Audience, r.Resources = c.AuthMethod, c.Encoding, c.Audience, c.Resources
	r.ClientID = from(credentials, keyClientID)
	if c.AuthMethod == config.AuthNone {
		// a public client: a client_secret stored beside it is never read, and never sent
		if r.ClientID == "" {
			err = errors.Join(err, errors.New("client_id is required"))
		}
	} else if r.ClientSecret = from(credentials, keyClientSecret); r.ClientID == "" || r.ClientSecret == "" {
		err = errors.Join(err, errors.New("client_id and client_secret are required"))
	}
	switch c.Grant {
	case config.GrantClientCredentials:
		r.GrantType, r.Scope = oauth.GrantClientCredentials, c.Scope
	case config.GrantAuthorizationCode:
		if code := get(keyCode); code != "" {
			r.GrantType, r.Code = oauth.GrantAuthorizationCode, code
			r.RedirectURI, r.CodeVerifier = get(keyRedirectURI), get(keyCodeVerifier)
			if r.RedirectURI == "" {
				err = errors.Join(err, errors.New("redirect_uri is required with code"))
			}
			if r.CodeVerifier == "" && c.AuthMethod == config.AuthNone {
				// RFC 7636 is a public client's only proof that the code is its own
				err = errors.Join(err, errors.New("code_verifier is required with code for a public client (token_endpoint_auth_method none): authorize it again with PKCE"))
			}
		} else if rt := get(keyRefreshToken); rt != "" {
			r.GrantType, r.RefreshToken, r.Scope = oauth.GrantRefreshToken, rt, c.Scope
		} else {
			err = errors.Join(err, errors.New("neither refresh_token nor code is stored: authorize the client first"))
		}
	default:
		err = errors.Join(err, fmt.Errorf("unknown grant %q", c.Grant))
	}
	return r, err
}
