package rotate

import (
	"context"
	"errors"
	"fmt"

	"token-rotator/oauth"
)

// failedGrant settles a grant that did not return a token. Its claim is released. An
// invalid_grant is checked against the secret as it is now: a newer refresh token stored by
// another process means the rotation happened elsewhere. Otherwise the refused refresh token is
// remembered (its fingerprint, in the metadata) until a grant succeeds, so that the client stays
// waiting for a human however its secret changes, until a new code or refresh token arrives; and
// if a request was lost in transit first, the token was most likely rotated and the answer lost.
func (r *Rotator) failedGrant(ctx context.Context, a *attempt, g grantResult) {
	t, req := a.t, a.req
	a.res.Outcome, a.res.Err, a.res.Status = Failed, g.err, StatusRetrying
	version := a.secret.Version
	if spends(req) && r.Store.KVVersion() == 2 {
		version = r.release(ctx, t.secret, a.secret, a.who)
	}
	var oe *oauth.Error
	if !spends(req) || !errors.As(g.err, &oe) || oe.Code != oauth.ErrInvalidGrant {
		r.record(ctx, t.secret, a.secret.Metadata, a.res, version, nil)
		return
	}
	if now, err := r.Store.Read(context.WithoutCancel(ctx), t.secret); err == nil {
		if rt := str(now.Data, keyRefreshToken); rt != "" && rt != a.seen.refreshToken {
			a.res.Outcome, a.res.Status, a.res.Err = RotatedElsewhere, "", nil
			a.res.ExpiresAt = r.storedExpiry(ctx, t.output)
			a.why = "the server refused the stored refresh token: another process spent it and stored a newer one"
			return
		}
		version = now.Version
	}
	refused := a.seen.refreshToken // the refresh token the server has refused, or is known dead
	if req.GrantType == oauth.GrantAuthorizationCode {
		if refused != "" && !g.maybeSpent && a.secret.Metadata[metaRefused] != fingerprint(refused) {
			// A new code was refused, but the refresh token stored before it still stands: drop
			// the code so the next pass refreshes as before, and say so.
			r.dropCode(ctx, t.secret, req.Code, a.who)
			a.res.Err = fmt.Errorf("the server refused the stored authorization code (invalid_grant); it was removed with its code_verifier and the stored refresh token is used again: %w", g.err)
			r.record(ctx, t.secret, a.secret.Metadata, a.res, version, nil)
			return
		}
		if refused != "" && !g.maybeSpent {
			version = r.dropCode(ctx, t.secret, req.Code, a.who)
			a.res.Status = StatusReauthorizationRequired
			a.res.Err = fmt.Errorf("the server refused the new authorization code (invalid_grant), and the stored refresh token was refused before: authorize the client again and store the new code in %s (the refused code and its code_verifier were removed; redirect_uri is kept for the next code): %w", t.secret, g.err)
			r.record(ctx, t.secret, a.secret.Metadata, a.res, version, map[string]string{metaRefused: fingerprint(refused)})
			return
		}
	}
	a.res.Status = StatusReauthorizationRequired
	what := "authorization code"
	if req.GrantType == oauth.GrantRefreshToken {
		what, refused = "refresh token", req.RefreshToken
	}
	a.res.Err = fmt.Errorf("the server refused the stored %s (invalid_grant): authorize the client again, then store the new code or refresh token in %s: %w", what, t.secret, g.err)
	if g.maybeSpent {
		a.res.Status = StatusRotationLost
		a.res.Err = fmt.Errorf("a refresh request was lost in transit and its retry was refused: the server most likely rotated the refresh token and the new one was lost; authorize the client again: %w", g.err)
	}
	var extra map[string]string
	if refused != "" {
		extra = map[string]string{metaRefused: fingerprint(refused)}
	}
	r.record(ctx, t.secret, a.secret.Metadata, a.res, version, extra)
}

// dropCode removes a refused code (and its verifier) from the secret, if it is still the one
// sent, and returns the secret's version afterwards (0 when it could not tell).
func (r *Rotator) dropCode(ctx context.Context, path, code string, who claimant) int {
	ctx = context.WithoutCancel(ctx)
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
