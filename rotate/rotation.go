package rotate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"token-rotator/config"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// storeTokenMargin is how long the store's own Vault token must still be valid when a target's
// rotation starts: a token request with its retries and the first write-back attempts must fit.
const storeTokenMargin = 3 * time.Minute

// rotate handles one target: read, decide, check, claim, request, write back, record. why says
// what made it due or not.
//
// ctx is cancelled on shutdown; startCtx also at the pass deadline. Waits before anything is
// spent (a token request slot, the rate limit) end with either; nothing after them does.
func (r *Rotator) rotate(ctx, startCtx context.Context, t target) (Result, string) {
	c := t.client
	res := Result{Client: t.name, Outcome: Failed}
	// Until the claim, nothing is spent: a shutdown skips the target instead of failing it.
	fail := func(err error) (Result, string) {
		if ctx.Err() != nil {
			return Result{Client: t.name, Outcome: Skipped}, "shutting down"
		}
		res.Err = err
		return res, ""
	}
	// A Vault token that cannot be made to last the rotation would let the job spend the refresh
	// token and then fail to store the new one: stop here instead.
	if err := r.Store.EnsureToken(ctx, storeTokenMargin); err != nil {
		res.Status = StatusRetrying
		return fail(fmt.Errorf("vault token would not last the rotation: %w", err))
	}
	secret, err := r.Store.Read(ctx, t.secret)
	var deleted *vault.DeletedError
	if t.shared != "" && errors.As(err, &deleted) {
		// A connection deleted in Vault is an operator offboarded; its metadata lingers until
		// destroyed. Nothing to rotate, nothing failed.
		return Result{Client: t.name, Outcome: Skipped}, "connection deleted"
	}
	if err != nil {
		return fail(err)
	}
	r.warnRetention(t, secret) // from what the read returned: no request
	credentials := secret.Data
	if t.shared != "" {
		if credentials, err = r.sharedCredentials(ctx, t.shared); err != nil {
			return fail(err)
		}
	}
	output := secret
	if t.output != t.secret {
		if output, err = r.readOrEmpty(ctx, t.output); err != nil {
			return fail(err)
		}
	}
	if heldElsewhere(secret.Data, r.holder(), r.now()) {
		res.Outcome = ClaimedElsewhere
		return res, "another process is rotating it"
	}
	if stuck(secret.Metadata, secret.Version) {
		res.Status = secret.Metadata[metaStatus]
		res.Err = fmt.Errorf("%s since %s: not retried until secret %s changes", res.Status, secret.Metadata[metaLastAttempt], t.secret)
		return res, ""
	}
	isDue, expiresAt, why := due(r.now(), output.Data, r.RenewBefore+time.Duration(spread(t.name)*float64(r.Spread)))
	if code, _ := stringField(secret.Data, keyCode); code != "" && c.Grant == config.GrantAuthorizationCode {
		isDue, why = true, "authorization code waiting to be exchanged"
	}
	res.ExpiresAt = expiresAt // what is in Vault now, until a rotation replaces it
	switch {
	case r.Force:
		isDue, why = true, "forced"
	case !isDue:
		res.Outcome = NotDue
		return res, why
	}
	req, err := request(c, credentials, secret.Data)
	if err != nil {
		res.Err, res.Status = fmt.Errorf("secret %s: %w", t.secret, err), StatusRetrying
		r.record(ctx, t.secret, secret.Metadata, res, secret.Version)
		return res, why
	}
	res.Grant = req.GrantType
	if r.DryRun {
		res.Outcome = DryRun
		return res, why
	}
	if err := r.preflight(ctx, t, output, req); err != nil {
		if ctx.Err() != nil {
			return fail(err)
		}
		res.Err, res.Status = err, StatusRetrying
		r.record(ctx, t.secret, secret.Metadata, res, secret.Version)
		return res, why
	}
	if spends(req) && r.Store.KVVersion() == 2 {
		// The claim is written to the end even if shutdown comes meanwhile: a claim that landed
		// unseen would keep every process off the secret until it lapsed.
		claimed, elsewhere, err := r.claim(context.WithoutCancel(ctx), t.secret, secret)
		switch {
		case elsewhere:
			res.Outcome = ClaimedElsewhere
			return res, "another process claimed it first"
		case err != nil && ctx.Err() != nil:
			return fail(err)
		case err != nil:
			res.Err, res.Status = fmt.Errorf("claim %s: %w", t.secret, err), StatusRetrying
			r.record(ctx, t.secret, secret.Metadata, res, secret.Version)
			return res, why
		case ctx.Err() != nil: // claimed, but shutdown came first: nothing spent, hand it back
			r.release(ctx, t.secret, claimed)
			return fail(ctx.Err())
		}
		secret = claimed
		if t.output == t.secret {
			output = secret
		}
	}

	// From here the server may spend the refresh token or code: finish whatever shutdown says.
	g := r.grantInSlot(ctx, startCtx, c.TokenURL, req)
	if errors.Is(g.err, errNotSent) {
		if spends(req) && r.Store.KVVersion() == 2 {
			r.release(ctx, t.secret, secret)
		}
		res.Outcome, res.Err = Skipped, nil
		return res, skipReason(ctx)
	}
	if g.err != nil {
		return r.failedGrant(ctx, t, secret, req, g, res), why
	}
	if err := r.writeBack(ctx, t, secret, output, req, g.token); err != nil {
		res.Err = fmt.Errorf("token granted but not stored: %w", err)
		res.Status = StatusRetrying
		var lost *refreshTokenLost
		if errors.As(err, &lost) {
			res.Status = StatusRotationLost
		}
		r.record(ctx, t.secret, secret.Metadata, res, secret.Version)
		return res, why
	}
	res.Outcome, res.Status, res.ExpiresAt = Rotated, StatusOK, g.token.ExpiresAt
	r.record(ctx, t.secret, secret.Metadata, res, 0)
	return res, why
}

// sharedCredentials reads the client_id and client_secret a client's connections share, once per
// pass however many connections use them.
func (r *Rotator) sharedCredentials(ctx context.Context, path string) (map[string]any, error) {
	r.sharedMu.Lock()
	if r.shared == nil {
		r.shared = map[string]*sharedEntry{}
	}
	e := r.shared[path]
	if e == nil {
		e = &sharedEntry{}
		r.shared[path] = e
	}
	r.sharedMu.Unlock()
	e.once.Do(func() {
		var s *vault.Secret
		if s, e.err = r.Store.Read(ctx, path); e.err == nil {
			e.data = s.Data
		} else {
			e.err = fmt.Errorf("client credentials: %w", e.err)
		}
	})
	return e.data, e.err
}

type sharedEntry struct {
	once sync.Once
	data map[string]any
	err  error
}

// grantInSlot runs the grant in one of the pass's Concurrency slots for token requests, waiting
// for one to free up; a shutdown while waiting sends nothing.
func (r *Rotator) grantInSlot(ctx, startCtx context.Context, tokenURL string, req oauth.Request) grantResult {
	if r.grantSlots != nil {
		select {
		case r.grantSlots <- struct{}{}:
			defer func() { <-r.grantSlots }()
		case <-startCtx.Done():
			return grantResult{err: errNotSent}
		}
	}
	return r.grant(ctx, startCtx, tokenURL, req)
}

// preflight fails before any token request when the job could not store what it would be
// granted: every path the write-back writes must be writable by the job's Vault token.
func (r *Rotator) preflight(ctx context.Context, t target, output *vault.Secret, req oauth.Request) error {
	if t.output != t.secret {
		if err := r.Store.Writable(ctx, t.output, output.Version > 0 || len(output.Data) > 0, false); err != nil {
			return err
		}
	}
	if spends(req) || t.output == t.secret {
		return r.Store.Writable(ctx, t.secret, true, true)
	}
	return nil
}

// failedGrant sorts out a grant that did not return a token. Its claim is released. An
// invalid_grant is checked against the secret as it is now: a newer refresh token stored by
// another process means the rotation happened elsewhere; otherwise the client needs a human, and
// if a request was lost in transit first, the token was most likely rotated and the answer lost.
func (r *Rotator) failedGrant(ctx context.Context, t target, secret *vault.Secret, req oauth.Request, g grantResult, res Result) Result {
	res.Err, res.Status = g.err, StatusRetrying
	version := secret.Version
	if spends(req) && r.Store.KVVersion() == 2 {
		version = r.release(ctx, t.secret, secret)
	}
	var oe *oauth.Error
	if spends(req) && errors.As(g.err, &oe) && oe.Code == oauth.ErrInvalidGrant {
		if now, err := r.Store.Read(context.WithoutCancel(ctx), t.secret); err == nil {
			rt, _ := stringField(now.Data, keyRefreshToken)
			code, _ := stringField(now.Data, keyCode)
			newer := rt != "" && rt != req.RefreshToken
			if req.GrantType == oauth.GrantAuthorizationCode {
				newer = newer && code != req.Code
			}
			if newer {
				res.Outcome, res.Status, res.Err = RotatedElsewhere, "", nil
				return res
			}
			version = now.Version
		}
		if rt, _ := stringField(secret.Data, keyRefreshToken); req.GrantType == oauth.GrantAuthorizationCode && rt != "" && !g.maybeSpent {
			// A new code was refused, but the refresh token stored before it still stands: drop
			// the code so the next pass refreshes as before, and say so.
			r.dropCode(ctx, t.secret, req.Code)
			res.Status = StatusRetrying
			res.Err = fmt.Errorf("the server refused the stored authorization code (invalid_grant); it was removed and the stored refresh token is used again: %w", g.err)
			r.record(ctx, t.secret, secret.Metadata, res, version)
			return res
		}
		res.Status = StatusReauthorizationRequired
		res.Err = fmt.Errorf("the server refused the stored %s (invalid_grant): authorize the client again, then store the new code or refresh token in %s: %w",
			map[bool]string{true: "refresh token", false: "authorization code"}[req.GrantType == oauth.GrantRefreshToken], t.secret, g.err)
		if g.maybeSpent {
			res.Status = StatusRotationLost
			res.Err = fmt.Errorf("a refresh request was lost in transit and its retry was refused: the server most likely rotated the refresh token and the new one was lost; authorize the client again: %w", g.err)
		}
	}
	r.record(ctx, t.secret, secret.Metadata, res, version)
	return res
}

// dropCode removes a refused code (and its verifier) from the secret, if it is still the one sent.
func (r *Rotator) dropCode(ctx context.Context, path, code string) {
	ctx = context.WithoutCancel(ctx)
	s, err := r.Store.Read(ctx, path)
	if err != nil {
		return
	}
	if c, _ := stringField(s.Data, keyCode); c != code {
		return
	}
	d := clone(s.Data)
	delete(d, keyCode)
	delete(d, keyCodeVerifier)
	dropClaim(d, r.holder())
	if _, err := r.Store.Write(ctx, path, d, s.Version); err != nil {
		r.logger().Warn("could not remove the refused code", "path", path, "error", err.Error())
	}
}
