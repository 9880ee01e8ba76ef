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

// landing is what the write-back left in one secret.
type landing int

const (
	// landedOurs: the secret holds what this grant returned.
	landedOurs landing = iota
	// landedTheirs: another process stored a newer pair meanwhile, and it stays.
	landedTheirs
	// landedSame: the server handed back the access token already stored (token reuse); the
	// secret still holds it.
	landedSame
	// landedGone: the credential secret was deleted meanwhile, and stays deleted.
	landedGone
)

// stored is what a write-back left in Vault.
type stored struct {
	credentials, output landing
	// expiresAt is when the access token the output now holds expires, when known.
	expiresAt time.Time
	// refreshExpiresAt is the credential secret's refresh_token_expires_at as written, or as found
	// when another process's refresh token stays; zero when none.
	refreshExpiresAt time.Time
}

// before is what a rotation saw before its token request: the refresh token in the credential
// secret as claimed, and the access token in the output secret as read.
type before struct {
	refreshToken, accessToken string
}

// writeBack stores what a grant returned. The refresh token is the only copy the job holds of a
// single-use credential, so it goes first: to the credential secret, with the consumed code and
// code_verifier and this rotation's claim removed, by Update, which never brings back a secret
// deleted meanwhile. The access token goes to the output secret after it; when output and secret
// are one path, both go in one write. Every other key of both secrets is kept, an empty value is
// never written, and a refresh response without a refresh token keeps the stored one. Nothing here
// uses the new access token: Doorkeeper retires the old refresh token on that first use, so the
// pair must be durable before anyone can.
//
// A newer pair is never overwritten, and never mistaken for one: the credential secret holds a
// newer refresh token only when it holds a non-empty one that is neither the one this rotation
// saw nor the one granted; the output holds a newer access token only when it holds one that is
// neither the one this rotation saw nor the one granted, with a plausible expiry later than the
// granted one's. Then theirs stays, and the result says so. It returns a *refreshTokenLost when
// the new refresh token could not be stored.
//
// With accessToo false only the credential secret is written (a response whose access token was
// refused): the output is left as it is.
func (r *Rotator) writeBack(ctx context.Context, a *attempt, tok *oauth.Token, accessToo bool) (stored, error) {
	t, req, seen, who := a.t, a.req, a.seen, a.who
	var out stored
	// holdClaim keeps this rotation's claim in the credential write when the access token goes to
	// an output secret of its own after it: released only once the output is written, so that no
	// process finds the new refresh token unclaimed beside the old access token and spends it again.
	holdClaim := false
	credentials := func(d map[string]any, changes map[string]any) {
		rt, _ := stringField(d, keyRefreshToken)
		if rt != "" && rt != seen.refreshToken && rt != tok.RefreshToken {
			out.credentials = landedTheirs
		} else {
			if want := cmp.Or(tok.RefreshToken, seen.refreshToken); want != "" && want != rt {
				changes[keyRefreshToken] = want
			}
			refreshExpiryChanges(d, changes, tok, seen)
		}
		if code, _ := stringField(d, keyCode); req.GrantType == oauth.GrantAuthorizationCode && code == req.Code {
			changes[keyCode], changes[keyCodeVerifier] = nil, nil
		}
		if dropsClaim(d, who) && (!holdClaim || out.credentials != landedOurs) {
			changes[keyClaim] = nil
		}
		out.refreshExpiresAt = storedRefreshExpiry(apply(d, changes))
	}
	access := func(d map[string]any, changes map[string]any) {
		at, _ := stringField(d, keyAccessToken)
		exp, plausible := storedExpiry(d, r.now())
		if at != "" && at != seen.accessToken && at != tok.AccessToken && plausible && exp.After(tok.ExpiresAt.Add(time.Second)) {
			out.output, out.expiresAt = landedTheirs, exp
			return
		}
		if at == tok.AccessToken && at == seen.accessToken {
			out.output = landedSame // the server handed back the token stored before the request
		}
		if at == tok.AccessToken && plausible && absDuration(exp.Sub(tok.ExpiresAt)) < time.Minute {
			out.expiresAt = exp // already there: handed back, or this write-back's own earlier write
			return
		}
		changes[keyAccessToken] = tok.AccessToken
		changes[keyTokenType] = tok.TokenType
		changes[keyExpiresAt] = tok.ExpiresAt.UTC().Format(time.RFC3339)
		if scope := cmp.Or(tok.Scope, req.Scope); scope != "" {
			changes[keyScope] = scope
		}
		out.expiresAt = tok.ExpiresAt.UTC().Truncate(time.Second) // as stored: RFC 3339 to the second
	}

	// One deadline for the whole write-back, both secrets: the time budget counts one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), orDefault(r.WriteDeadline, DefaultWriteDeadline))
	defer cancel()
	if t.output == t.secret {
		_, err := r.update(ctx, t.secret, a.secret, true, func(d, changes map[string]any) {
			out.credentials, out.output = landedOurs, landedOurs
			credentials(d, changes)
			if out.credentials == landedOurs && accessToo {
				access(d, changes)
			}
		})
		return landingOf(out, err, spends(req))
	}
	if spends(req) {
		holdClaim = accessToo
		written, err := r.update(ctx, t.secret, a.secret, true, func(d, changes map[string]any) {
			out.credentials = landedOurs
			credentials(d, changes)
		})
		if out, err = landingOf(out, err, true); err != nil || out.credentials != landedOurs || !accessToo {
			return out, err
		}
		defer r.releaseAfterOutput(ctx, t.secret, written, who)
	}
	_, err := r.update(ctx, t.output, a.output, false, func(d, changes map[string]any) {
		out.output = landedOurs
		access(d, changes)
	})
	return out, err
}

// releaseAfterOutput removes who's claim from the credential secret as the write-back left it,
// once the output is written (or could not be), within StatusWriteTimeout. A claim it cannot
// remove lapses at its expiry; the refresh token has landed either way.
func (r *Rotator) releaseAfterOutput(ctx context.Context, path string, written *vault.Secret, who claimant) {
	// its own time: an output write that failed may have used up the write-back's deadline
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StatusWriteTimeout)
	defer cancel()
	_, err := r.update(ctx, path, written, true, func(d, changes map[string]any) {
		if dropsClaim(d, who) {
			changes[keyClaim] = nil
		}
	})
	if err != nil && !errors.Is(err, errGone) {
		r.logger().Warn("could not release claim after the write-back; it lapses at its expiry", "path", path, "error", err.Error())
	}
}

// refreshExpiryChanges fills in the credential secret's refresh_token_expires_at for a write-back that
// lands: the granted expiry when the response gave one; removed when a new refresh token came
// without one (the stored value described the old token); kept when the response kept the stored
// refresh token (none came back, or the same one) and said nothing of its expiry.
func refreshExpiryChanges(d, changes map[string]any, tok *oauth.Token, seen before) {
	stored, _ := stringField(d, keyRefreshExpiresAt)
	switch {
	case !tok.RefreshExpiresAt.IsZero():
		if want := tok.RefreshExpiresAt.UTC().Format(time.RFC3339); want != stored {
			changes[keyRefreshExpiresAt] = want
		}
	case tok.RefreshToken != "" && tok.RefreshToken != seen.refreshToken && d[keyRefreshExpiresAt] != nil:
		changes[keyRefreshExpiresAt] = nil
	}
}

// landingOf turns the credential write's error into the write-back's result: a secret deleted
// meanwhile is a landing, not an error; any other failure after a spend lost the refresh token.
func landingOf(out stored, err error, spent bool) (stored, error) {
	switch {
	case errors.Is(err, errGone):
		out.credentials = landedGone
		return out, nil
	case err != nil && spent:
		return out, &refreshTokenLost{err}
	}
	return out, err
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// refreshTokenLost is a write-back that could not store the new refresh token: the server has
// rotated it and the only copy died with the attempt.
type refreshTokenLost struct{ err error }

func (e *refreshTokenLost) Error() string { return "new refresh token not stored: " + e.err.Error() }
func (e *refreshTokenLost) Unwrap() error { return e.err }

// update works out changes to the data of the secret at path (change fills them in from the data
// as it is) and writes them, check-and-set on the version read, until they land or WriteDeadline
// passes (ctx's deadline). An existing credential secret (existing) is changed with Store.Update, which fails with
// errGone once the secret is deleted: it stays deleted. Any other secret is written whole with
// Store.Write, which creates it, or recreates it when deleted. No changes, nothing written. If the
// secret changed meanwhile it is read again and change applied to the newer data, so no one
// else's keys are lost and the new values still land. Any other failure (Vault down, sealed, 5xx,
// its token expired: the store logs in again) is retried with backoff. It ignores ctx's
// cancellation: a shutdown must not stop a write that holds the only copy of a refresh token.
func (r *Rotator) update(ctx context.Context, path string, base *vault.Secret, existing bool, change func(data, changes map[string]any)) (*vault.Secret, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = orDefault(r.WriteBackoff, 200*time.Millisecond)
	b.MaxInterval = 10 * time.Second
	b.MaxElapsedTime = 0 // ctx's deadline ends the retries
	b.Reset()
	last := false  // the attempt squeezed in before the deadline was made
	var end func() // set while counted as waiting for Vault, from the first failure on
	defer func() {
		if end != nil {
			end()
		}
	}()
	for attempt := 1; ; attempt++ {
		changes := map[string]any{}
		change(base.Data, changes)
		if len(changes) == 0 {
			return base, nil
		}
		var err error
		var version int
		if existing {
			version, err = r.Store.Update(ctx, path, changes, base.Version)
		} else {
			version, err = r.Store.Write(ctx, path, apply(base.Data, changes), base.Version)
		}
		if err == nil {
			return &vault.Secret{Data: apply(base.Data, changes), Version: version, Metadata: base.Metadata}, nil
		}
		if existing && errors.Is(err, vault.ErrNotFound) {
			return nil, errGone
		}
		if errors.Is(err, vault.ErrVersionMismatch) {
			var fresh *vault.Secret
			var rerr error
			if existing {
				fresh, rerr = r.Store.Read(ctx, path)
				if errors.Is(rerr, vault.ErrNotFound) {
					return nil, errGone // deleted since: an operator offboarding it
				}
			} else {
				fresh, rerr = r.readOrEmpty(ctx, path)
			}
			if rerr == nil {
				base = fresh
				continue
			}
			err = rerr
		}
		if ctx.Err() != nil || last {
			return nil, fmt.Errorf("after %d attempts: %w", attempt, err)
		}
		wait := b.NextBackOff()
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait+time.Second {
			wait, last = max(time.Until(dl)-time.Second, 0), true // one last attempt before the deadline
		}
		if end == nil {
			end = r.waits.begin(waitVault)
		}
		r.logger().Warn("write-back failed; retrying", "path", path, "attempt", attempt, "error", err.Error())
		if !sleep(ctx, wait) {
			return nil, fmt.Errorf("after %d attempts: %w", attempt, err)
		}
	}
}

// apply returns a copy of data with changes made: a nil value removes its key.
func apply(data, changes map[string]any) map[string]any {
	d := clone(data)
	for k, v := range changes {
		if v == nil {
			delete(d, k)
		} else {
			d[k] = v
		}
	}
	return d
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
