package rotate

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"

	"token-rotator/oauth"
)

// errNotSent is a grant given up before its first request: the pass was cancelled while it
// waited under the rate limit. Nothing was spent.
var errNotSent = errors.New("not sent: shutting down")

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
//     as long as the server's Retry-After or RateLimit-Reset asks, until GrantRetry is spent;
//   - a transport error (no response, timeout, response cut short) is retried likewise;
//   - but a request spending a refresh token or code that got no answer, or a 5xx (a gateway may
//     answer 502 or 504 after the server acted), is retried exactly once, even past GrantRetry:
//     the server may already have rotated the token, the retry is the only way to learn the new
//     pair (Doorkeeper's default keeps the old token valid until the new one is used), and a second
//     refusal would only hide what happened;
//   - any other response (invalid_client, invalid_grant, invalid_scope, a malformed body...) is
//     final.
//
// Waits end early when ctx is cancelled (shutdown), unless a request may already have spent the
// refresh token: then the one retry still goes out, since it is the only way to learn the new pair.
// Each request itself runs on ctx's values without its cancellation. Every attempt first waits its
// turn under the token URL's rate limit.
func (r *Rotator) grant(ctx, startCtx context.Context, tokenURL string, req oauth.Request) grantResult {
	spends := req.GrantType != oauth.GrantClientCredentials
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = orDefault(r.GrantBackoff, 500*time.Millisecond)
	b.MaxInterval = 30 * time.Second
	b.MaxElapsedTime = orDefault(r.GrantRetry, 2*time.Minute)
	b.Reset()
	var res grantResult
	limit := r.limiter(tokenURL)
	for {
		if limit != nil {
			waitCtx := ctx
			switch {
			case res.maybeSpent:
				waitCtx = context.WithoutCancel(ctx)
			case res.attempts == 0:
				waitCtx = startCtx // nothing sent yet: the pass deadline ends the wait too
			}
			if err := limit.Wait(waitCtx); err != nil {
				if res.attempts == 0 {
					res.err = errNotSent
				}
				return res
			}
		}
		res.attempts++
		res.token, res.err = r.Tokens.Token(context.WithoutCancel(ctx), tokenURL, req)
		r.observeResponse(res.err)
		if res.err == nil {
			return res
		}
		var wait time.Duration
		var oe *oauth.Error
		var te *oauth.TransportError
		firstDoubt := false
		switch {
		case errors.As(res.err, &te), spends && errors.As(res.err, &oe) && oe.Status >= 500:
			// No answer, or a 5xx that a gateway may have sent after the server acted: a spent
			// refresh token is possible. One retry, whatever the budget says; never two.
			if spends {
				if res.maybeSpent {
					return res
				}
				res.maybeSpent, firstDoubt = true, true
			}
			if oe != nil {
				wait = oe.RetryAfter
			}
		case errors.As(res.err, &oe) && oe.Temporary():
			wait = oe.RetryAfter
		default:
			return res
		}
		next := b.NextBackOff()
		if !firstDoubt && (next == backoff.Stop || b.GetElapsedTime()+max(wait, next) > b.MaxElapsedTime) {
			return res
		}
		if next == backoff.Stop {
			next = b.InitialInterval
		}
		sleepCtx := ctx
		if res.maybeSpent {
			sleepCtx = context.WithoutCancel(ctx)
		}
		if !sleep(sleepCtx, max(wait, next)) {
			return res
		}
	}
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
