package rotate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"token-rotator/oauth"
	"token-rotator/vault"
)

// writeBack stores what a grant returned. The refresh token is the only copy the job holds of a
// single-use credential, so it goes first: to the credential secret, with the consumed code and
// code_verifier and this process's claim removed. The access token goes to the output secret after
// it; when output and secret are one path, both go in one write. Every other key of both secrets
// is kept, an empty value is never written, and a refresh response without a refresh token keeps
// the stored one. Nothing here uses the new access token: Doorkeeper retires the old refresh token
// on that first use, so the pair must be durable before anyone can.
//
// A newer pair is never overwritten: if a secret changed meanwhile and now holds a refresh token
// other than the one spent (or, for the output, an access token that expires later), someone
// rotated after us and theirs stays. It returns a *refreshTokenLost when the new refresh token
// could not be stored.
func (r *Rotator) writeBack(ctx context.Context, t target, secret, output *vault.Secret, req oauth.Request, tok *oauth.Token) error {
	credentials := func(d map[string]any) bool {
		rt, _ := stringField(d, keyRefreshToken)
		code, _ := stringField(d, keyCode)
		newer := rt != tok.RefreshToken && ((req.GrantType == oauth.GrantRefreshToken && rt != req.RefreshToken) ||
			(req.GrantType == oauth.GrantAuthorizationCode && code != req.Code && rt != ""))
		if !newer && tok.RefreshToken != "" {
			d[keyRefreshToken] = tok.RefreshToken
		}
		if req.GrantType == oauth.GrantAuthorizationCode && code == req.Code {
			delete(d, keyCode)
			delete(d, keyCodeVerifier)
		}
		dropClaim(d, r.holder())
		return true
	}
	access := func(d map[string]any) bool {
		if s, _ := stringField(d, keyExpiresAt); s != "" {
			if theirs, err := time.Parse(time.RFC3339, s); err == nil && theirs.After(tok.ExpiresAt.Add(time.Second)) {
				if at, _ := stringField(d, keyAccessToken); at != "" && at != tok.AccessToken {
					return false // a later token is already there
				}
			}
		}
		d[keyAccessToken] = tok.AccessToken
		d[keyTokenType] = tok.TokenType
		d[keyExpiresAt] = tok.ExpiresAt.UTC().Format(time.RFC3339)
		if scope := cmp.Or(tok.Scope, req.Scope); scope != "" {
			d[keyScope] = scope
		}
		return true
	}
	if t.output == t.secret {
		err := r.update(ctx, t.secret, secret, func(d map[string]any) bool { credentials(d); access(d); return true })
		if err != nil && spends(req) {
			return &refreshTokenLost{err}
		}
		return err
	}
	if spends(req) {
		if err := r.update(ctx, t.secret, secret, credentials); err != nil {
			return &refreshTokenLost{err}
		}
	}
	return r.update(ctx, t.output, output, access)
}

// refreshTokenLost is a write-back that could not store the new refresh token: the server has
// rotated it and the only copy died with the attempt.
type refreshTokenLost struct{ err error }

func (e *refreshTokenLost) Error() string { return "new refresh token not stored: " + e.err.Error() }
func (e *refreshTokenLost) Unwrap() error { return e.err }

// update applies change to the data of the secret at path and writes it, check-and-set on the
// version read, until it lands or WriteDeadline passes; change returns false when there is nothing
// to write. If the secret changed meanwhile it is read
// again and the change applied to the newer data, so no one else's keys are lost and the new values
// still land. Any other failure (Vault down, sealed, 5xx, its token expired: the store logs in
// again) is retried with backoff. It ignores ctx's cancellation: a shutdown must not stop a write
// that holds the only copy of a refresh token.
func (r *Rotator) update(ctx context.Context, path string, base *vault.Secret, change func(map[string]any) bool) error {
	deadline := orDefault(r.WriteDeadline, 10*time.Minute)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deadline)
	defer cancel()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = orDefault(r.WriteBackoff, 200*time.Millisecond)
	b.MaxInterval = 10 * time.Second
	b.MaxElapsedTime = deadline
	b.Reset()
	for attempt := 1; ; attempt++ {
		d := clone(base.Data)
		if !change(d) {
			return nil
		}
		_, err := r.Store.Write(ctx, path, d, base.Version)
		if err == nil {
			return nil
		}
		if errors.Is(err, vault.ErrVersionMismatch) {
			if fresh, rerr := r.readOrEmpty(ctx, path); rerr == nil {
				base = fresh
				continue
			} else {
				err = rerr
			}
		}
		wait := b.NextBackOff()
		if wait == backoff.Stop || ctx.Err() != nil {
			return fmt.Errorf("after %d attempts over %v: %w", attempt, deadline, err)
		}
		r.logger().Warn("write-back failed; retrying", "path", path, "attempt", attempt, "error", err.Error())
		if !sleep(ctx, wait) {
			return fmt.Errorf("after %d attempts over %v: %w", attempt, deadline, err)
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

// spends reports whether a grant consumes something stored: a refresh token or a code.
func spends(req oauth.Request) bool { return req.GrantType != oauth.GrantClientCredentials }
