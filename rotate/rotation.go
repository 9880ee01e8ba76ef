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

// tokenMargin is how long the store's own Vault token must still be valid when a target's
// rotation starts: TokenMargin, default DefaultTokenMargin.
func (r *Rotator) tokenMargin() time.Duration { return orDefault(r.TokenMargin, DefaultTokenMargin) }

// attempt is one target's rotation as it goes: what was read and decided before the token request.
type attempt struct {
	t      target
	who    claimant
	secret *vault.Secret  // the credential secret as read, then as claimed
	output *vault.Secret  // the output secret as read; secret itself when they are one path
	creds  map[string]any // client_id and client_secret
	req    oauth.Request
	seen   before
	res    Result
	why    string // what made it due or not
}

// rotate handles one target in named steps: read, decide, check, claim, grant, store. It returns
// the result and why the target was due or not.
//
// ctx is cancelled on shutdown; startCtx also at the pass deadline. Until a token request may
// have spent something, a shutdown skips the target instead of failing it; after, the rotation
// runs to the end of its write-back.
func (r *Rotator) rotate(ctx, startCtx context.Context, t target) (Result, string) {
	a := &attempt{t: t, who: claimant{r.holder(), t.name}, res: Result{Client: t.name, Outcome: Failed}}
	for _, step := range []func(context.Context, *attempt) bool{r.read, r.decide, r.check} {
		if done := step(ctx, a); done {
			return a.res, a.why
		}
	}
	if r.DryRun {
		a.res.Outcome = DryRun
		return a.res, a.why
	}
	claimedAt := r.now() // the claim's life is counted from its first attempt (it may land unseen)
	if done := r.claimFor(ctx, a); done {
		return a.res, a.why
	}
	sendBy := claimedAt.Add(orDefault(r.GrantRetry, DefaultGrantRetry))
	g := r.grantInSlot(ctx, startCtx, t.name, t.client.TokenURL, a.req, sendBy)
	r.store(ctx, startCtx, a, g)
	return a.res, a.why
}

// skipOrFail ends an attempt before anything was spent: skipped when shutdown is why it stopped,
// failed with err (and status, when not empty) otherwise.
func (a *attempt) skipOrFail(ctx context.Context, status string, err error) bool {
	if ctx.Err() != nil {
		a.res = Result{Client: a.t.name, Outcome: Skipped}
		a.why = "shutting down"
		return true
	}
	a.res.Outcome, a.res.Status, a.res.Err = Failed, status, err
	return true
}

// read reads the target's secrets, after making sure the job's Vault token outlasts the rotation.
// A connection that is gone (deleted, or its metadata too) is skipped: an operator offboarded it.
func (r *Rotator) read(ctx context.Context, a *attempt) bool {
	t := a.t
	// A Vault token that cannot be made to last the rotation would let the job spend the refresh
	// token and then fail to store the new one: stop here instead.
	if err := r.untilVault(ctx, "vault token", func() error { return r.Store.EnsureToken(ctx, r.tokenMargin()) }); err != nil {
		return a.skipOrFail(ctx, StatusRetrying, fmt.Errorf("vault token would not last the rotation: %w", err))
	}
	var secret *vault.Secret
	err := r.untilVault(ctx, "read", func() (err error) {
		secret, err = r.Store.Read(ctx, t.secret)
		return err
	})
	if gone, lost := r.vanished(ctx, t, err); gone {
		a.res, a.why = Result{Client: t.name, Outcome: Skipped, Gone: true}, "connection deleted"
		return true
	} else if lost != nil {
		if a.skipOrFail(ctx, StatusRetrying, lost); a.res.Outcome == Failed {
			r.record(ctx, t.secret, nil, a.res, 0, nil) // the metadata outlives a soft delete
		}
		return true
	}
	if err != nil {
		return a.skipOrFail(ctx, "", err)
	}
	r.warnRetention(t, secret) // from what the read returned: no request
	a.secret, a.output, a.creds = secret, secret, secret.Data
	if t.shared != "" {
		if err = r.untilVault(ctx, "read", func() (err error) {
			a.creds, err = r.sharedCredentials(ctx, t.shared)
			return err
		}); err != nil {
			return a.skipOrFail(ctx, "", err)
		}
	}
	if t.output != t.secret {
		if err = r.untilVault(ctx, "read", func() (err error) {
			a.output, err = r.readOrEmpty(ctx, t.output)
			return err
		}); err != nil {
			return a.skipOrFail(ctx, "", err)
		}
	}
	return false
}

// decide settles whether the target is due: not while another process holds its claim, nor while
// it waits for a human (stuck), nor while its access token has long to live (unless forced or a
// code waits to be exchanged).
func (r *Rotator) decide(ctx context.Context, a *attempt) bool {
	renewBefore := r.RenewBefore + time.Duration(spread(a.t.name)*float64(r.Spread))
	isDue, expiresAt, why := due(r.now(), a.output.Data, renewBefore)
	if a.t.client.Grant != config.GrantClientCredentials {
		// A refresh token about to expire is spent while it works, however fresh the access token.
		refreshDue, refreshAt, refreshWhy := refreshDue(r.now(), a.secret.Data, renewBefore)
		if refreshDue && !isDue {
			isDue, why = true, refreshWhy
		}
		a.res.RefreshExpiresAt, a.res.RefreshExpiryRead = refreshAt, true
	}
	// What is in Vault now, until a rotation replaces it: also for a target held elsewhere or
	// stuck, whose token's expiry alerts must still see.
	a.res.ExpiresAt = expiresAt
	if heldElsewhere(a.secret.Data, a.who, r.now()) {
		a.res.Outcome, a.why = ClaimedElsewhere, "another process is rotating it"
		return true
	}
	if status, ok := stuck(a.secret.Metadata, a.secret.Version, a.secret.Data); ok {
		a.res.Outcome, a.res.Status = Failed, status
		a.res.Err = fmt.Errorf("%s since %s: not retried until a new code or refresh token is stored in %s", status, a.secret.Metadata[metaLastAttempt], a.t.secret)
		return true
	}
	if code, _ := stringField(a.secret.Data, keyCode); code != "" && a.t.client.Grant == config.GrantAuthorizationCode {
		isDue, why = true, "authorization code waiting to be exchanged"
	}
	a.why = why
	switch {
	case r.Force:
		a.why = "forced"
	case !isDue:
		a.res.Outcome = NotDue
		return true
	}
	return false
}

// check builds the token request and makes sure, before any request, that the job could store
// what it would be granted. A failure here is recorded for operators (not on a dry run).
func (r *Rotator) check(ctx context.Context, a *attempt) bool {
	req, err := request(a.t.client, a.creds, a.secret.Data)
	if err != nil {
		if a.skipOrFail(ctx, StatusRetrying, fmt.Errorf("secret %s: %w", a.t.secret, err)); a.res.Outcome == Failed {
			r.record(ctx, a.t.secret, a.secret.Metadata, a.res, a.secret.Version, nil)
		}
		return true
	}
	a.req, a.res.Grant = req, req.GrantType
	a.seen = before{refreshToken: str(a.secret.Data, keyRefreshToken), accessToken: str(a.output.Data, keyAccessToken)}
	if r.DryRun {
		return false
	}
	if err := r.untilVault(ctx, "pre-flight", func() error { return r.preflight(ctx, a.t, a.output, req) }); err != nil {
		if a.skipOrFail(ctx, StatusRetrying, err); a.res.Outcome == Failed {
			r.record(ctx, a.t.secret, a.secret.Metadata, a.res, a.secret.Version, nil)
		}
		return true
	}
	return false
}

// claimFor claims the credential secret before a grant that spends what it holds (KV v2). The
// claim is written to the end even if shutdown comes meanwhile: a claim that landed unseen would
// keep every process off the secret until it lapsed.
func (r *Rotator) claimFor(ctx context.Context, a *attempt) bool {
	if !spends(a.req) || r.Store.KVVersion() != 2 {
		return false
	}
	var claimed *vault.Secret
	var elsewhere bool
	err := r.untilVault(ctx, "claim", func() (err error) {
		// A claim that landed unseen (its answer lost) is found as this process's own by the
		// next attempt's check-and-set mismatch.
		claimed, elsewhere, err = r.claim(context.WithoutCancel(ctx), a.t.secret, a.secret, a.who)
		return err
	})
	switch {
	case elsewhere:
		a.res.Outcome, a.why = ClaimedElsewhere, "another process claimed it first"
		return true
	case errors.Is(err, errGone):
		a.res, a.why = Result{Client: a.t.name, Outcome: Skipped, Gone: a.t.shared != ""}, "secret deleted"
		return true
	case err != nil:
		if a.skipOrFail(ctx, StatusRetrying, fmt.Errorf("claim %s: %w", a.t.secret, err)); a.res.Outcome == Failed {
			r.record(ctx, a.t.secret, a.secret.Metadata, a.res, a.secret.Version, nil)
		}
		return true
	case ctx.Err() != nil: // claimed, but shutdown came first: nothing spent, hand it back
		r.release(ctx, a.t.secret, claimed, a.who)
		return a.skipOrFail(ctx, "", ctx.Err())
	}
	a.secret = claimed
	if a.t.output == a.t.secret {
		a.output = claimed
	}
	return false
}

// store settles a grant: what was granted is written back and the result says what Vault holds.
func (r *Rotator) store(ctx, startCtx context.Context, a *attempt, g grantResult) {
	t := a.t
	var partial *oauth.PartialTokenError
	switch {
	case errors.Is(g.err, errNotSent):
		if spends(a.req) && r.Store.KVVersion() == 2 {
			r.release(ctx, t.secret, a.secret, a.who)
		}
		a.res.Outcome, a.res.Err, a.res.Status = Skipped, nil, ""
		switch {
		case ctx.Err() != nil:
			a.why = "shutting down"
		case startCtx.Err() != nil:
			a.why = "pass deadline reached; next pass"
		default:
			a.why = "no token request sent within the rotation's time budget (request slots, rate limit); next pass"
		}
		return
	case spends(a.req) && errors.As(g.err, &partial):
		r.storeRefreshTokenOnly(ctx, a, partial)
		return
	case g.err != nil:
		r.failedGrant(ctx, a, g)
		return
	}
	landed, err := r.writeBack(ctx, a, g.token, true)
	a.refreshExpiryLanded(landed, err)
	if err != nil {
		a.res.Err, a.res.Status = fmt.Errorf("token granted but not stored: %w", err), StatusRetrying
		var lost *refreshTokenLost
		if errors.As(err, &lost) {
			a.res.Status = StatusRotationLost
		}
		r.record(ctx, t.secret, a.secret.Metadata, a.res, a.secret.Version, nil)
		return
	}
	if r.endedElsewhere(ctx, a, landed) {
		return
	}
	a.res.Err = nil
	a.res.RefreshTokenKept = a.req.GrantType == oauth.GrantRefreshToken && (g.token.RefreshToken == "" || g.token.RefreshToken == a.req.RefreshToken)
	if landed.output == landedSame {
		a.res.Outcome, a.res.Status, a.res.ExpiresAt = Reused, StatusOK, landed.expiresAt
		a.why = "the token endpoint handed back the stored access token"
	} else {
		a.res.Outcome, a.res.Status, a.res.ExpiresAt = Rotated, StatusOK, landed.expiresAt
	}
	r.record(ctx, t.secret, a.secret.Metadata, a.res, 0, nil)
}

// refreshExpiryLanded sets the result's refresh token expiry to what a write-back of a grant that
// spends left in the credential secret: none once the secret is deleted. A write-back whose
// credential write failed leaves the stored one; one whose output write alone failed has landed
// the credential write.
func (a *attempt) refreshExpiryLanded(landed stored, err error) {
	var lost *refreshTokenLost
	switch {
	case errors.As(err, &lost) || !spends(a.req) || !a.res.RefreshExpiryRead:
	case landed.credentials == landedGone:
		a.res.RefreshExpiresAt = time.Time{}
	default:
		a.res.RefreshExpiresAt = landed.refreshExpiresAt
	}
}

// endedElsewhere ends an attempt whose write-back found the secrets taken out of its hands: the
// credential secret deleted meanwhile, or a newer pair stored by another process. It reports
// whether it did.
func (r *Rotator) endedElsewhere(ctx context.Context, a *attempt, landed stored) bool {
	a.res.Err, a.res.Status = nil, ""
	switch {
	case landed.credentials == landedGone:
		a.res.Outcome, a.res.ExpiresAt, a.res.Gone = Deleted, time.Time{}, a.t.shared != "" // a configured client stays
		a.why = "secret deleted during its rotation: left deleted, what the server granted not stored"
	case landed.credentials == landedTheirs:
		a.res.Outcome, a.res.ExpiresAt = RotatedElsewhere, r.outputExpiry(ctx, a.t.output)
		a.why = "another process stored a newer refresh token meanwhile; it stays"
	case landed.output == landedTheirs:
		a.res.Outcome, a.res.ExpiresAt = RotatedElsewhere, landed.expiresAt
		a.why = "another process stored a newer access token meanwhile; it stays"
	default:
		return false
	}
	return true
}

// storeRefreshTokenOnly handles a response whose refresh token is new and well-formed but whose
// access token cannot be used: the server has rotated the refresh token (the old one may already
// be dead), so the new one is stored and the access token refused.
func (r *Rotator) storeRefreshTokenOnly(ctx context.Context, a *attempt, partial *oauth.PartialTokenError) {
	landed, err := r.writeBack(ctx, a, &oauth.Token{RefreshToken: partial.RefreshToken}, false)
	a.refreshExpiryLanded(landed, err)
	var lost *refreshTokenLost
	switch {
	case errors.As(err, &lost):
		a.res.Outcome, a.res.Status = Failed, StatusRotationLost
		a.res.Err = fmt.Errorf("the server rotated the refresh token but its access token was unusable (%v), and the new refresh token could not be stored: %w", partial.Err, err)
	case r.endedElsewhere(ctx, a, landed):
		return
	default:
		a.res.Outcome, a.res.Status = AccessTokenRefused, StatusRetrying
		a.res.Err = fmt.Errorf("the server rotated the refresh token but its access token was unusable, so the new refresh token was stored and the access token refused: %w", partial.Err)
	}
	r.record(ctx, a.t.secret, a.secret.Metadata, a.res, 0, nil)
}

// outputExpiry reads the expiry of the access token an output secret holds now, for a result that
// keeps another process's; zero when it cannot tell. It is bounded by StatusWriteTimeout.
func (r *Rotator) outputExpiry(ctx context.Context, path string) time.Time {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StatusWriteTimeout)
	defer cancel()
	s, err := r.Store.Read(ctx, path)
	if err != nil {
		return time.Time{}
	}
	if exp, plausible := storedExpiry(s.Data, r.now()); plausible {
		return exp
	}
	return time.Time{}
}

// sharedCredentials reads the client_id and client_secret a client's connections share, once per
// pass however many connections use them; a read that failed is made again by the next caller.
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
	e.mu.Lock() // one read at a time; a failed read is not kept, so the next connection reads again
	defer e.mu.Unlock()
	if !e.read {
		s, err := r.Store.Read(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("client credentials: %w", err)
		}
		e.data, e.read = s.Data, true
	}
	return e.data, nil
}

type sharedEntry struct {
	mu   sync.Mutex
	read bool // data holds what a read returned
	data map[string]any
}

// grantInSlot runs the grant for the target named client in one of the pass's Concurrency slots
// for token requests, waiting for one to free up; a shutdown, the pass deadline or sendBy passing
// while it waits sends nothing.
func (r *Rotator) grantInSlot(ctx, startCtx context.Context, client, tokenURL string, req oauth.Request, sendBy time.Time) grantResult {
	if r.grantSlots != nil {
		waitCtx, cancel := context.WithDeadline(startCtx, sendBy)
		defer cancel()
		end := r.waits.begin(waitRequestSlot)
		select {
		case r.grantSlots <- struct{}{}:
			end()
			defer func() { <-r.grantSlots }()
		case <-waitCtx.Done():
			end()
			return grantResult{err: errNotSent}
		}
	}
	return r.grant(ctx, startCtx, client, tokenURL, req, sendBy)
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

// str is data[key] when it is a string, else "".
func str(data map[string]any, key string) string {
	s, _ := stringField(data, key)
	return s
}
