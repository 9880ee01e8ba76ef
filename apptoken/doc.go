// Package apptoken gives Go apps the Stora access token that token-rotator keeps in a Vault KV
// secret (the output secret: access_token, token_type, expires_at, scope), as a
// golang.org/x/oauth2 TokenSource and as an http.RoundTripper that sets
// "Authorization: Bearer <access_token>".
//
// A Source caches the token and reads the secret again when MaxAge has passed since it was read
// (to see a new version) or when less than ReadBefore is left before its expires_at; while the
// token held has not expired that read runs in the background and callers get the token held at
// once. On a 401 from the API the Transport applies README's rule for apps: read the secret
// again and retry the request once with the token now stored, if that is another one.
// Doorkeeper, behind the Stora API, may end a token at the moment token-rotator refreshes it, a
// few milliseconds before the new one is in Vault, so the Transport waits up to WaitForNew for a
// token other than the one refused; requests that start meanwhile wait for it too. One Vault
// read at a time serves every caller.
//
// Use Transport (or Client) for API calls. oauth2.NewClient, or wrapping the Source in
// oauth2.ReuseTokenSource, sends the token but cannot apply the 401 rule: a request that meets a
// rotation fails.
//
//	src, err := apptoken.Open(ctx, apptoken.Options{Path: "apps/acme"}) // VAULT_ADDR, VAULT_TOKEN
//	if err != nil {
//		return err
//	}
//	stora := src.Client(&http.Client{Timeout: 30 * time.Second})
//	resp, err := stora.Get("https://public-api.stora.co/...")
//
// Open logs in to Vault as token-rotator does (token, kubernetes, approle) and logs in again when
// Vault refuses its token; New takes a client the caller keeps logged in. KV v1 and v2 mounts
// both work. No error or String output of this package contains a token.
package apptoken
