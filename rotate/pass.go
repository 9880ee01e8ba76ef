package rotate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"token-rotator/config"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// storeTokenMargin is how long the store's own Vault token must still be valid when a client's
// rotation starts: a token request with its retries and the first write-back attempts must fit.
const storeTokenMargin = 3 * time.Minute

// Pass rotates every client that is due, one after another, and returns one Result per client in
// configuration order. A cancelled ctx stops the pass from starting further clients; a rotation
// already past its claim runs to the end of its write-back.
func (r *Rotator) Pass(ctx context.Context) []Result {
	results := make([]Result, 0, len(r.Clients))
	for _, c := range r.Clients {
		if ctx.Err() != nil {
			res := Result{Client: c.Name, Outcome: Skipped}
			r.log(res, "shutting down")
			results = append(results, res)
			continue
		}
		res, why := r.rotate(ctx, c)
		r.log(res, why)
		results = append(results, res)
	}
	return results
}

// rotate handles one client: read, decide, check, claim, request, write back, record. why says
// what made it due or not.
func (r *Rotator) rotate(ctx context.Context, c config.Client) (Result, string) {
	res := Result{Client: c.Name, Outcome: Failed}
	if err := r.Store.EnsureToken(ctx, storeTokenMargin); err != nil {
		r.logger().Warn("vault token may expire during the rotation", "client", c.Name, "error", err.Error())
	}
	secret, err := r.Store.Read(ctx, c.Secret)
	if err != nil {
		res.Err = err
		return res, ""
	}
	output := secret
	if c.Output != c.Secret {
		if output, err = r.readOrEmpty(ctx, c.Output); err != nil {
			res.Err = err
			return res, ""
		}
	}
	if heldElsewhere(secret.Data, r.holder(), r.now()) {
		res.Outcome = ClaimedElsewhere
		return res, "another process is rotating it"
	}
	if stuck(secret.Metadata, secret.Version) {
		res.Status = secret.Metadata[metaStatus]
		res.Err = fmt.Errorf("%s since %s: not retried until secret %s changes", res.Status, secret.Metadata[metaLastAttempt], c.Secret)
		return res, ""
	}
	isDue, expiresAt, why := due(r.now(), output.Data, r.RenewBefore)
	if code, _ := stringField(secret.Data, keyCode); code != "" && c.Grant == config.GrantAuthorizationCode {
		isDue, why = true, "authorization code waiting to be exchanged"
	}
	switch {
	case r.Force:
		isDue, why = true, "forced"
	case !isDue:
		res.Outcome, res.ExpiresAt = NotDue, expiresAt
		return res, why
	}
	req, err := request(c, secret.Data)
	if err != nil {
		res.Err, res.Status = fmt.Errorf("secret %s: %w", c.Secret, err), StatusRetrying
		r.record(ctx, c.Secret, secret.Metadata, res, secret.Version)
		return res, why
	}
	res.Grant = req.GrantType
	if r.DryRun {
		res.Outcome = DryRun
		return res, why
	}
	if err := r.preflight(ctx, c, secret, output, req); err != nil {
		res.Err, res.Status = err, StatusRetrying
		r.record(ctx, c.Secret, secret.Metadata, res, secret.Version)
		return res, why
	}
	if spends(req) && r.Store.KVVersion() == 2 {
		claimed, elsewhere, err := r.claim(ctx, c.Secret, secret)
		switch {
		case elsewhere:
			res.Outcome = ClaimedElsewhere
			return res, "another process claimed it first"
		case err != nil:
			res.Err, res.Status = fmt.Errorf("claim %s: %w", c.Secret, err), StatusRetrying
			r.record(ctx, c.Secret, secret.Metadata, res, secret.Version)
			return res, why
		}
		secret = claimed
		if c.Output == c.Secret {
			output = secret
		}
	}

	// From here the server may spend the refresh token or code: finish whatever shutdown says.
	g := r.grant(ctx, c.TokenURL, req)
	if g.err != nil {
		return r.failedGrant(ctx, c, secret, req, g, res), why
	}
	if err := r.writeBack(ctx, c, secret, output, req, g.token); err != nil {
		res.Err = fmt.Errorf("token granted but not stored: %w", err)
		res.Status = StatusRetrying
		if spends(req) {
			res.Status = StatusRotationLost
		}
		r.record(ctx, c.Secret, secret.Metadata, res, secret.Version)
		return res, why
	}
	res.Outcome, res.Status, res.ExpiresAt = Rotated, StatusOK, g.token.ExpiresAt
	r.record(ctx, c.Secret, secret.Metadata, res, 0)
	return res, why
}

// preflight fails before any token request when the job could not store what it would be
// granted: every path the write-back writes must be writable by the job's Vault token.
func (r *Rotator) preflight(ctx context.Context, c config.Client, secret, output *vault.Secret, req oauth.Request) error {
	if c.Output != c.Secret {
		if err := r.Store.Writable(ctx, c.Output, output.Version > 0 || len(output.Data) > 0); err != nil {
			return err
		}
	}
	if spends(req) || c.Output == c.Secret {
		return r.Store.Writable(ctx, c.Secret, true)
	}
	return nil
}

// claim writes this process's claim to the credential secret, check-and-set on the version read,
// and returns the secret as claimed. elsewhere is set when another process won the race.
func (r *Rotator) claim(ctx context.Context, path string, secret *vault.Secret) (claimed *vault.Secret, elsewhere bool, err error) {
	data := withClaim(secret.Data, r.holder(), r.now(), orDefault(r.ClaimTTL, 15*time.Minute))
	v, err := r.Store.Write(ctx, path, data, secret.Version)
	if errors.Is(err, vault.ErrVersionMismatch) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &vault.Secret{Data: data, Version: v, Metadata: secret.Metadata}, false, nil
}

// failedGrant sorts out a grant that did not return a token. Its claim is released. An
// invalid_grant is checked against the secret as it is now: a newer refresh token stored by
// another process means the rotation happened elsewhere; otherwise the client needs a human, and
// if a request was lost in transit first, the token was most likely rotated and the answer lost.
func (r *Rotator) failedGrant(ctx context.Context, c config.Client, secret *vault.Secret, req oauth.Request, g grantResult, res Result) Result {
	res.Err, res.Status = g.err, StatusRetrying
	version := secret.Version
	if spends(req) && r.Store.KVVersion() == 2 {
		version = r.release(ctx, c.Secret, secret)
	}
	var oe *oauth.Error
	if errors.As(g.err, &oe) && oe.Code == oauth.ErrInvalidGrant {
		if now, err := r.Store.Read(ctx, c.Secret); err == nil {
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
		res.Status = StatusReauthorizationRequired
		res.Err = fmt.Errorf("the server refused the stored %s (invalid_grant): authorize the client again, then store the new code or refresh token in %s: %w",
			map[bool]string{true: "refresh token", false: "authorization code"}[req.GrantType == oauth.GrantRefreshToken], c.Secret, g.err)
		if g.maybeSpent {
			res.Status = StatusRotationLost
			res.Err = fmt.Errorf("a refresh request was lost in transit and its retry was refused: the server most likely rotated the refresh token and the new one was lost; authorize the client again: %w", g.err)
		}
	}
	r.record(ctx, c.Secret, secret.Metadata, res, version)
	return res
}

// release removes this process's claim after a failed grant, check-and-set on the claimed version,
// and returns the secret's version afterwards. A failure is logged: the claim then lapses at its
// expiry.
func (r *Rotator) release(ctx context.Context, path string, claimed *vault.Secret) int {
	d := clone(claimed.Data)
	dropClaim(d, r.holder())
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	v, err := r.Store.Write(ctx, path, d, claimed.Version)
	if err != nil {
		r.logger().Warn("could not release claim; it lapses at its expiry", "path", path, "error", err.Error())
		return claimed.Version
	}
	return v
}

// log writes the one line per client per pass. It never logs a token value.
func (r *Rotator) log(res Result, why string) {
	attrs := []slog.Attr{slog.String("client", res.Client), slog.String("outcome", string(res.Outcome))}
	if res.Grant != "" {
		attrs = append(attrs, slog.String("grant", res.Grant))
	}
	if res.Status != "" && res.Status != StatusOK {
		attrs = append(attrs, slog.String("status", res.Status))
	}
	if why != "" {
		attrs = append(attrs, slog.String("reason", why))
	}
	if !res.ExpiresAt.IsZero() {
		attrs = append(attrs, slog.Time("expires_at", res.ExpiresAt))
	}
	level, msg := slog.LevelInfo, ""
	switch res.Outcome {
	case Failed:
		level, msg = slog.LevelError, "rotation failed"
		attrs = append(attrs, slog.String("error", res.Err.Error()))
	case NotDue:
		msg = "access token not due"
	case Skipped:
		msg = "rotation not started"
	case DryRun:
		msg = "would rotate (dry run)"
	case Rotated:
		msg = "access token rotated"
	case ClaimedElsewhere:
		msg = "skipped: claimed by another process"
	case RotatedElsewhere:
		msg = "rotated by another process"
	}
	r.logger().LogAttrs(context.Background(), level, msg, attrs...)
}
