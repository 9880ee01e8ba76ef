package rotate

import (
	"context"
	"errors"
	"fmt"

	"token-rotator/oauth"
)

// failedGrant settles a grant that did not return a token. Its claim is released; a secret
// deleted meanwhile stays deleted. An invalid_grant is checked against the secret as it is now: a
// newer refresh token stored by another process means the rotation happened elsewhere. Otherwise:
//
//   - a refused refresh token is remembered (its fingerprint, in the metadata) until a grant
//     succeeds, so the client waits for a human however its secret changes, until a new code or
//     refresh token arrives; it is rotation_lost rather than reauthorization_required when this
//     refresh, or the last one with the same token, may have been spent unseen (lost in transit);
//   - a refused code (or one whose exchange was lost in transit) is removed; a stored refresh
//     token not known to be refused is used again, and one known to be refused keeps the client
//     reauthorization_required.
//
// Everything here is bounded by StatusWriteTimeout (budget.go).
func (r *Rotator) failedGrant(ctx context.Context, a *attempt, g grantResult) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StatusWriteTimeout)
	defer cancel()
	t, req, meta := a.t, a.req, a.secret.Metadata
	a.res.Outcome, a.res.Err, a.res.Status = Failed, g.err, StatusRetrying
	version := a.secret.Version
	if spends(req) && r.Store.KVVersion() == 2 {
		var gone bool
		if version, gone = r.release(ctx, t.secret, a.secret, a.who); gone {
			a.res = Result{Client: t.name, Outcome: Deleted, Grant: a.res.Grant, Gone: t.shared != ""}
			a.why = "secret deleted during its rotation: left deleted"
			return
		}
	}
	var oe *oauth.Error
	if !spends(req) || !errors.As(g.err, &oe) || oe.Code != oauth.ErrInvalidGrant {
		var extra map[string]string
		if g.maybeSpent && req.GrantType == oauth.GrantRefreshToken {
			// Remembered, so that if the next pass's refresh is refused, it is known for lost.
			extra = map[string]string{metaMaybeSpent: fingerprint(req.RefreshToken)}
		}
		r.record(ctx, t.secret, meta, a.res, version, extra)
		return
	}
	if now, err := r.Store.Read(ctx, t.secret); err == nil {
		if rt := str(now.Data, keyRefreshToken); rt != "" && rt != a.seen.refreshToken {
			a.res.Outcome, a.res.Status, a.res.Err = RotatedElsewhere, "", nil
			a.res.ExpiresAt = r.outputExpiry(ctx, t.output)
			a.why = "the server refused the stored refresh token: another process spent it and stored a newer one"
			return
		}
		version = now.Version
	}
	if req.GrantType == oauth.GrantAuthorizationCode {
		r.refusedCode(ctx, a, g, version)
		return
	}
	refused := fingerprint(req.RefreshToken)
	a.res.Status = StatusReauthorizationRequired
	a.res.Err = fmt.Errorf("the server refused the stored refresh token (invalid_grant): authorize the client again, then store the new code or refresh token in %s: %w", t.secret, g.err)
	if g.maybeSpent || meta[metaMaybeSpent] == refused {
		a.res.Status = StatusRotationLost
		a.res.Err = fmt.Errorf("a refresh request was lost in transit and the refresh token was then refused: the server most likely rotated it and the new one was lost; authorize the client again: %w", g.err)
	}
	r.record(ctx, t.secret, meta, a.res, version, map[string]string{metaRefused: refused})
}

// refusedCode settles an authorization code the server refused, or whose exchange was lost in
// transit and its retry refused: the code (and its verifier) is removed, and the client goes back
// to its stored refresh token unless there is none, or the server refused it before.
func (r *Rotator) refusedCode(ctx context.Context, a *attempt, g grantResult, version int) {
	t, stored := a.t, a.seen.refreshToken
	what := "refused the stored authorization code (invalid_grant)"
	if g.maybeSpent {
		what = "may have consumed the authorization code in an exchange lost in transit (its retry was refused)"
	}
	if v := r.dropCode(ctx, t.secret, a.req.Code, a.who); v > 0 {
		version = v
	}
	switch {
	case stored != "" && a.secret.Metadata[metaRefused] != fingerprint(stored):
		a.res.Err = fmt.Errorf("the server %s; the code and its code_verifier were removed and the stored refresh token is used again: %w", what, g.err)
		r.record(ctx, t.secret, a.secret.Metadata, a.res, version, nil)
	case stored != "":
		a.res.Status = StatusReauthorizationRequired
		a.res.Err = fmt.Errorf("the server %s, and the stored refresh token was refused before: authorize the client again and store the new code in %s (the code and its code_verifier were removed; redirect_uri is kept for the next code): %w", what, t.secret, g.err)
		r.record(ctx, t.secret, a.secret.Metadata, a.res, version, map[string]string{metaRefused: fingerprint(stored)})
	default:
		a.res.Status = StatusReauthorizationRequired
		if g.maybeSpent {
			a.res.Status = StatusRotationLost // the exchange most likely issued a refresh token, and it was lost
		}
		a.res.Err = fmt.Errorf("the server %s and no refresh token is stored: authorize the client again and store the new code in %s (the code and its code_verifier were removed): %w", what, t.secret, g.err)
		r.record(ctx, t.secret, a.secret.Metadata, a.res, version, nil)
	}
}

// dropCode removes a refused code (and its verifier) from the secret, if it is still the one
// sent, and returns the secret's version afterwards (0 when it could not tell).
func (r *Rotator) dropCode(ctx context.Context, path, code string, who claimant) int {
	s, err := r.Store.Read(ctx, path)
	if err != nil {
		return 0
	}
	if str(s.Data, keyCode) != code {
		return s.Version
	}
	changes := map[string]any{keyCode: nil, keyCodeVerifier: nil}
	if dropsClaim(s.Data, who) {
		changes[keyClaim] = nil
	}
	v, err := r.Store.Update(ctx, path, changes, s.Version)
	if err != nil {
		r.logger().Warn("could not remove the refused code", "path", path, "error", err.Error())
		return s.Version
	}
	return v
}
