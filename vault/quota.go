package vault

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Pacing under a Vault rate-limit quota (sys/quotas/rate-limit): once Vault answers 429, every
// request of the client slows down together, and the refused request is sent again.
const (
	// quotaCut is what a 429 leaves of the pace: the requests sent since it were too many.
	quotaCut = 0.8
	// quotaRaise is how much the pace grows each second Vault accepts everything, so that it
	// finds the quota again after a cut, or after the quota is raised or removed.
	quotaRaise = 1.05
	// quotaFloor and quotaCeiling bound the pace, in requests a second: below the floor the
	// client would rather be refused now and then; above the ceiling it stops pacing at all.
	quotaFloor, quotaCeiling = 1.0, 10000.0
	// maxQuotaPause bounds the pause a Retry-After asks for (Vault's block_interval): longer
	// than the quotas Vault users set, far shorter than the write-back's deadline.
	maxQuotaPause = time.Minute
)

// quotaTransport is the one limiter every request of a Vault client waits on. It starts
// unlimited. When Vault answers 429 (a rate-limit quota, which Vault checks before it routes the
// request, so the request was not carried out and sending it again is safe, a check-and-set
// write included), it paces all the client's requests at quotaCut of what Vault accepted in the
// last second (or of the pace already set), at most one cut a second since the requests in
// flight are refused together; it pauses them until the Retry-After Vault gives (only when
// sys/quotas/config has enable_rate_limit_response_headers); and it sends the refused request
// again. Each second without a 429 the pace grows by quotaRaise, until it is lifted. A request
// waits, and is sent again, for as long as its context allows (the Vault client's timeout,
// VAULT_CLIENT_TIMEOUT, 15 s by default, or its caller's deadline if sooner); then it returns
// the last 429 as Vault gave it.
//
// vault/api's own retries (retryablehttp, VAULT_MAX_RETRIES) stay on, for 5xx answers and
// network errors: a 429 only reaches them once its request's context has ended, and they do not
// retry then, so they never add their fixed 1-1.5 s waits to a quota's own.
type quotaTransport struct {
	base    http.RoundTripper
	limiter *rate.Limiter

	mu        sync.Mutex
	resume    time.Time // no request before this: the Retry-After of the latest 429
	lastCut   time.Time // when the pace was last cut
	lastRaise time.Time // when it last grew
	second    time.Time // start of the second whose accepted requests are counted
	accepted  [2]int    // requests Vault accepted in that second and the one before
}

func newQuotaTransport(base http.RoundTripper) *quotaTransport {
	return &quotaTransport{base: base, limiter: rate.NewLimiter(rate.Inf, 1)}
}

// RoundTrip sends req through base, paced, and sends it again after a 429 while req's context
// allows.
func (q *quotaTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := q.wait(ctx); err != nil {
		return nil, err
	}
	out := req
	for {
		resp, err := q.base.RoundTrip(out)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests {
			if err == nil {
				q.accept(time.Now())
			}
			return resp, err
		}
		q.refuse(time.Now(), resp.Header.Get("Retry-After"))
		if req.Body != nil && req.GetBody == nil {
			return resp, nil // its body cannot be sent again
		}
		if q.wait(ctx) != nil {
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		out = req.Clone(ctx)
		if req.GetBody != nil {
			if out.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

// wait blocks until the pause after a 429 is over and the pace lets the next request go. It
// fails at once when ctx's deadline comes first.
func (q *quotaTransport) wait(ctx context.Context) error {
	q.mu.Lock()
	pause := time.Until(q.resume)
	q.mu.Unlock()
	if pause > 0 {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < pause {
			return errors.New("vault rate-limit quota: Retry-After is past the request's deadline")
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	return q.limiter.Wait(ctx)
}

// accept counts a request Vault carried out, and raises the pace once a second.
func (q *quotaTransport) accept(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.tick(now)
	q.accepted[0]++
	limit := q.limiter.Limit()
	if limit == rate.Inf || now.Sub(q.lastRaise) < time.Second {
		return
	}
	q.lastRaise = now
	if limit *= quotaRaise; limit > quotaCeiling {
		limit = rate.Inf
	}
	q.limiter.SetLimitAt(now, limit)
}

// refuse cuts the pace after a 429, once a second, and pauses every request until retryAfter
// (RFC 9110 §10.2.3: seconds or an HTTP date) when Vault gave one.
func (q *quotaTransport) refuse(now time.Time, retryAfter string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if secs, err := strconv.Atoi(retryAfter); err == nil && secs > 0 {
		q.resume = later(q.resume, now.Add(time.Duration(secs)*time.Second))
	} else if at, err := http.ParseTime(retryAfter); err == nil {
		q.resume = later(q.resume, at)
	}
	if limit := now.Add(maxQuotaPause); q.resume.After(limit) {
		q.resume = limit // a proxy's hour, or a clock gone wrong, must not hold a write-back past its deadline
	}
	if now.Sub(q.lastCut) < time.Second {
		return
	}
	q.tick(now)
	limit := q.limiter.Limit()
	if limit == rate.Inf {
		limit = rate.Limit(max(q.accepted[0], q.accepted[1]))
	}
	q.lastCut, q.lastRaise = now, now
	q.limiter.SetLimitAt(now, max(limit*quotaCut, quotaFloor))
}

// tick moves the count of accepted requests on to the second now is in. The caller holds q.mu.
func (q *quotaTransport) tick(now time.Time) {
	switch gap := now.Sub(q.second); {
	case gap < time.Second:
	case gap < 2*time.Second:
		q.second, q.accepted = q.second.Add(time.Second), [2]int{0, q.accepted[0]}
	default:
		q.second, q.accepted = now, [2]int{}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
