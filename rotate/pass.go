package rotate

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"token-rotator/config"
)

// Pass rotates every client that is due, one after another, and returns one Result per client in
// configuration order. A cancelled ctx stops the pass from starting further clients; a rotation
// already past its token request runs to the end of its write-back.
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

// rotate handles one client: read, decide, request, write back. why says what made it due or not.
func (r *Rotator) rotate(ctx context.Context, c config.Client) (Result, string) {
	res := Result{Client: c.Name, Outcome: Failed}
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
		res.Err = fmt.Errorf("secret %s: %w", c.Secret, err)
		return res, why
	}
	res.Grant = req.GrantType
	if r.DryRun {
		res.Outcome = DryRun
		return res, why
	}

	// From here the server may consume a refresh token or code: finish whatever shutdown says.
	ctx = context.WithoutCancel(ctx)
	tok, err := r.Tokens.Token(ctx, c.TokenURL, req)
	if err != nil {
		res.Err = err
		return res, why
	}
	timeout := r.WriteTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := r.writeBack(wctx, c, secret, output, req, tok); err != nil {
		res.Err = fmt.Errorf("token granted but not stored: %w", err)
		return res, why
	}
	res.Outcome, res.ExpiresAt = Rotated, tok.ExpiresAt
	return res, why
}

// log writes the one line per client per pass. It never logs a token value.
func (r *Rotator) log(res Result, why string) {
	attrs := []slog.Attr{slog.String("client", res.Client), slog.String("outcome", string(res.Outcome))}
	if res.Grant != "" {
		attrs = append(attrs, slog.String("grant", res.Grant))
	}
	if why != "" {
		attrs = append(attrs, slog.String("reason", why))
	}
	if !res.ExpiresAt.IsZero() {
		attrs = append(attrs, slog.Time("expires_at", res.ExpiresAt))
	}
	level, msg := slog.LevelInfo, "access token "+string(res.Outcome)
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
	}
	r.logger().LogAttrs(context.Background(), level, msg, attrs...)
}
