package rotate

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/cenkalti/backoff/v4"

	"token-rotator/oauth"
)

// errNotSent is a grant given up while nothing it sent could have spent anything: a shutdown, the
// pass deadline or the rotation's send budget ended a wait for a request slot, the rate limit or a
// backoff. The refresh token or code is as it was.
var errNotSent = errors.New("not sent")

// grantResult is the outcome of a token request with its retries.
type grantResult struct {
	token *oauth.Token
	err   error
	// attempts is the number of requests sent.
	attempts int
	// maybeSpent is set when a request that spends a refresh token or code failed in transit: the
	// server may have rotated it without our hearing.
	maybeSpent bool
}

// grant sends the token request, retrying what may succeed later, and only that:
//
//   - a 5xx, 429 or 408 response is retried with exponential backoff and jitter, waiting at least
//     as long as the server's Retry-After or RateLimit-Reset asks, while the next attempt can
//     start before sendBy (the claim's time plus GrantRetry);
//   - a transport error (no response, timeout, response cut short) is retried likewise;
//   - but a request spending a refresh token or code that got no answer, or a 5xx (a gateway may
//     answer 502 or 504 after the server acted), is retried exactly once, even past sendBy, after
//     at most MaxSpentWait: the server may already have rotated the token, the retry is the only
//     way to learn the new pair (Doorkeeper's default keeps the old token valid until the new one
//     is used), and a second refusal would only hide what happened;
//   - any other response (invalid_client, invalid_grant, invalid_scope, a malformed body...) is
//     final, and so is one of RFC 6749's token endpoint error codes under any status (a
//     gateway's 503 around the server's invalid_grant: finalCode);
//   - after the one retry that follows a possible spend, nothing is retried, whatever the answer.
//
// Until a request may have spent something, every wait (the rate limit, a backoff) ends with ctx
// (shutdown) and the first one also with startCtx (the pass deadline); a wait so ended returns
// errNotSent. After, the one retry goes out whatever ctx says. Each request runs on ctx's values
// without its cancellation, for at most RequestTimeout.
//
// Each failed request is one debug line for the target named client: "retrying" with the wait
// and why, or "not retried" and why not.
func (r *Rotator) grant(ctx, startCtx context.Context, client, tokenURL string, req oauth.Request, sendBy time.Time) grantResult {
	spending := spends(req)
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = orDefault(r.GrantBackoff, 500*time.Millisecond)
	b.MaxInterval = 30 * time.Second
	b.MaxElapsedTime = 0 // sendBy bounds the retries
	b.Reset()
	var res grantResult
	limit := r.limiter(tokenURL)
	var spentWait context.Context // after a possible spend: the bound on the wait before the retry
	log := r.logger().With("client", client)
	for {
		if limit != nil {
			waitCtx, cancel := r.waitContext(ctx, startCtx, res, spentWait, sendBy)
			end := r.waits.begin(waitRateLimit)
			err := limit.Wait(waitCtx)
			end()
			cancel()
			if err != nil && !res.maybeSpent {
				return r.cutShort(ctx, res)
			} // after a possible spend the retry goes out even if the rate limit would have it wait longer
		}
		afterSpend := res.maybeSpent
		res.attempts++
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RequestTimeout)
		end := r.waits.begin(waitTokenEndpoint)
		res.token, res.err = r.Tokens.Token(rctx, tokenURL, req)
		end()
		cancel()
		r.observeResponse(res.err)
		if res.err == nil {
			return res
		}
		r.waits.tokenFailed(oneLine(res.err))
		var wait time.Duration
		var oe *oauth.Error
		var te *oauth.TransportError
		switch {
		case afterSpend:
			// The one retry after a possible spend was sent: never another.
			return r.notRetried(log, res, "a request that may have spent the refresh token or code is retried once, never twice")
		case errors.As(res.err, &oe) && finalCode[oe.Code]:
			// The server's considered answer (invalid_grant, invalid_client...), whatever status
			// a gateway put on it: it acted on the request and refused it. Final.
			return r.notRetried(log, res, "the server refused the request: final")
		case errors.As(res.err, &te) && neverSent(res.err):
			// The connection was never made (refused, no route, no such host): nothing reached
			// the server, nothing can have been spent. Retried within the budget like a 503.
		case errors.As(res.err, &te), spending && errors.As(res.err, &oe) && oe.Status >= 500:
			// No answer, or a 5xx that a gateway may have sent after the server acted: a spent
			// refresh token is possible. One retry, whatever the budget says; never two.
			if spending {
				res.maybeSpent = true
				var stop context.CancelFunc
				spentWait, stop = context.WithTimeout(context.WithoutCancel(ctx), orDefault(r.SpentWait, MaxSpentWait))
				defer stop()
			}
			if oe != nil {
				wait = oe.RetryAfter
			}
		case errors.As(res.err, &oe) && oe.Temporary():
			wait = oe.RetryAfter
		default:
			return r.notRetried(log, res, "the server's answer is final")
		}
		wait = max(wait, b.NextBackOff())
		if res.maybeSpent {
			wait = min(wait, orDefault(r.SpentWait, MaxSpentWait)/2) // the other half is for the rate limit
			r.backoff(spentWait, log, res, wait, slog.Int("max_attempts", 2))
			continue
		}
		left := slog.String("retry_budget_left", max(sendBy.Sub(r.now()), 0).Round(time.Millisecond).String())
		if r.now().Add(wait).After(sendBy) {
			// The budget is spent: this failure is the answer.
			return r.notRetried(log, res, "the rotation's retry budget ends before the next attempt", slog.String("wait", wait.Round(time.Millisecond).String()), left)
		}
		if !r.backoff(ctx, log, res, wait, left) {
			return r.cutShort(ctx, res)
		}
	}
}

// backoff logs that the failed request in res is retried after wait, and why, then waits it out
// (counted as the pass waiting for a token request's retry) or until ctx ends; it reports whether
// the whole wait passed. bound says what limits the retries.
func (r *Rotator) backoff(ctx context.Context, log *slog.Logger, res grantResult, wait time.Duration, bound slog.Attr) bool {
	attrs := append(failedAttempt(res), slog.String("wait", wait.Round(time.Millisecond).String()), bound)
	log.LogAttrs(context.Background(), slog.LevelDebug, "token request failed; retrying", attrs...)
	defer r.waits.begin(waitTokenRetry)()
	return sleep(ctx, wait)
}

// notRetried logs that the failed request in res is the last, and why; it returns res.
func (r *Rotator) notRetried(log *slog.Logger, res grantResult, why string, more ...slog.Attr) grantResult {
	attrs := append(failedAttempt(res), slog.String("reason", why))
	log.LogAttrs(context.Background(), slog.LevelDebug, "token request failed; not retried", append(attrs, more...)...)
	return res
}

// failedAttempt describes a failed token request for a log line: its number, the HTTP status and
// the wait the server asked for, if any, and the error, whose text never holds a secret, code or
// token (oauth.Client.Token removes them; a transport error names the URL, not the body).
func failedAttempt(res grantResult) []slog.Attr {
	attrs := []slog.Attr{slog.Int("attempt", res.attempts)}
	var oe *oauth.Error
	if errors.As(res.err, &oe) {
		attrs = append(attrs, slog.Int("http_status", oe.Status))
		if oe.RetryAfter > 0 {
			attrs = append(attrs, slog.String("retry_after", oe.RetryAfter.String()), slog.String("retry_after_from", oe.RetryAfterFrom))
		}
	}
	return append(attrs, slog.String("error", oneLine(res.err)))
}

// waitContext is what ends the rate limit's wait before the next attempt: after a possible spend,
// only the bound on the wait for the retry; before the first attempt, also the pass deadline;
// otherwise shutdown and the send budget.
func (r *Rotator) waitContext(ctx, startCtx context.Context, res grantResult, spentWait context.Context, sendBy time.Time) (context.Context, context.CancelFunc) {
	switch {
	case res.maybeSpent:
		return spentWait, func() {}
	case res.attempts == 0:
		return context.WithDeadline(startCtx, sendBy)
	default:
		return context.WithDeadline(ctx, sendBy)
	}
}

// cutShort is the result of a wait that ended before the next attempt while nothing sent could
// have spent anything: a shutdown or the pass deadline is errNotSent (the rotation is skipped);
// the send budget running out keeps the last failure, if there was one.
func (r *Rotator) cutShort(ctx context.Context, res grantResult) grantResult {
	if res.attempts == 0 || ctx.Err() != nil {
		res.err = errNotSent
	}
	return res
}

// finalCode are the error codes RFC 6749 §5.2 defines for the token endpoint: each is the
// server's refusal of the request, final whatever HTTP status a gateway put around it. Other codes
// (server_error, temporarily_unavailable, a server's own rate_limited) are judged by the status.
var finalCode = map[string]bool{
	oauth.ErrInvalidRequest: true, oauth.ErrInvalidClient: true, oauth.ErrInvalidGrant: true,
	oauth.ErrUnauthorizedClient: true, oauth.ErrUnsupportedGrantType: true, oauth.ErrInvalidScope: true,
}

// sleep waits d, or until ctx is done; it reports whether the whole wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// observeResponse tells the Observer what the token endpoint answered.
func (r *Rotator) observeResponse(err error) {
	if r.Observer == nil {
		return
	}
	var oe *oauth.Error
	switch {
	case err == nil:
		r.Observer.TokenResponse(200)
	case errors.As(err, &oe):
		r.Observer.TokenResponse(oe.Status)
	default:
		r.Observer.TokenResponse(0)
	}
}

// neverSent reports whether a token request failed before any byte of it could reach the server:
// the connection was never made (its dial failed: refused, unreachable, no such host).
func neverSent(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &op) && op.Op == "dial" || errors.As(err, &dns)
}
