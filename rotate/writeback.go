package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"token-rotator/config"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// casAttempts bounds how often a write is retried after check-and-set found the secret changed.
const casAttempts = 5

// writeBack stores what a grant returned. The refresh token is the only copy the job holds of a
// single-use credential, so it goes first: to the credential secret, with the consumed code and
// code_verifier removed. The access token goes to the output secret after it; when output and
// secret are one path, both go in one write. Every other key of both secrets is kept, an empty
// value is never written, and a refresh response without a refresh token keeps the stored one.
func (r *Rotator) writeBack(ctx context.Context, c config.Client, secret, output *vault.Secret, req oauth.Request, tok *oauth.Token) error {
	credentials := func(d map[string]any) {
		if tok.RefreshToken != "" {
			d[keyRefreshToken] = tok.RefreshToken
		}
		if req.GrantType == oauth.GrantAuthorizationCode {
			delete(d, keyCode)
			delete(d, keyCodeVerifier)
		}
	}
	access := func(d map[string]any) {
		d[keyAccessToken] = tok.AccessToken
		d[keyTokenType] = tok.TokenType
		d[keyExpiresAt] = tok.ExpiresAt.UTC().Format(time.RFC3339)
		if scope := firstNonEmpty(tok.Scope, req.Scope); scope != "" {
			d[keyScope] = scope
		}
	}
	if c.Output == c.Secret {
		return r.update(ctx, c.Secret, secret, func(d map[string]any) { credentials(d); access(d) })
	}
	if tok.RefreshToken != "" || req.GrantType == oauth.GrantAuthorizationCode {
		if err := r.update(ctx, c.Secret, secret, credentials); err != nil {
			return err
		}
	}
	return r.update(ctx, c.Output, output, access)
}

// update applies change to the data of the secret at path and writes it, check-and-set on the
// version read. If the secret changed meanwhile it is read again and the change applied to the
// newer data, so no one else's keys are lost and the new values still land.
func (r *Rotator) update(ctx context.Context, path string, base *vault.Secret, change func(map[string]any)) error {
	for attempt := 1; ; attempt++ {
		d := clone(base.Data)
		change(d)
		_, err := r.Store.Write(ctx, path, d, base.Version)
		if err == nil || !errors.Is(err, vault.ErrVersionMismatch) || attempt == casAttempts {
			return err
		}
		if base, err = r.readOrEmpty(ctx, path); err != nil {
			return fmt.Errorf("re-read after check-and-set conflict: %w", err)
		}
	}
}

// readOrEmpty reads the secret at path. A secret that does not exist is empty at version 0; one
// whose latest version is deleted is empty at that version, so a check-and-set write recreates it.
func (r *Rotator) readOrEmpty(ctx context.Context, path string) (*vault.Secret, error) {
	s, err := r.Store.Read(ctx, path)
	var deleted *vault.DeletedError
	switch {
	case errors.As(err, &deleted):
		return &vault.Secret{Data: map[string]any{}, Version: deleted.Version}, nil
	case errors.Is(err, vault.ErrNotFound):
		return &vault.Secret{Data: map[string]any{}}, nil
	}
	return s, err
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
