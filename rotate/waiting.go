package rotate

import (
	"log/slog"
	"sync/atomic"
)

// waitKind is something a rotation can be waiting for, as the pass's progress line counts them.
type waitKind int

const (
	waitTokenEndpoint waitKind = iota // a token request sent, its answer awaited
	waitTokenRetry                    // the backoff (or the server's Retry-After) before retrying a token request
	waitRateLimit                     // the job's own rate limit for the token endpoint
	waitRequestSlot                   // a free one of the Concurrency token request slots
	waitVault                         // Vault, unavailable since the step's first attempt (untilVault, the write-back)
	waitKinds
)

// waitKeys are the progress line's names for the kinds, in the "waiting" group.
var waitKeys = [waitKinds]string{"token_endpoint", "token_retry", "rate_limit", "request_slot", "vault"}

// waiting counts the rotations of a pass by what they wait for, so that a pass that makes no
// progress says why. The zero value is ready; a nil *waiting counts nothing.
type waiting struct {
	n [waitKinds]atomic.Int64
	// lastTokenError is the latest failure of a token request this pass, already fit for a log line.
	lastTokenError atomic.Pointer[string]
}

// begin counts one rotation as waiting for k until the returned end is called.
func (w *waiting) begin(k waitKind) (end func()) {
	if w == nil {
		return func() {}
	}
	w.n[k].Add(1)
	return func() { w.n[k].Add(-1) }
}

// tokenFailed records the latest failure of a token request (its log text: no secret in it).
func (w *waiting) tokenFailed(err string) { w.lastTokenError.Store(&err) }

// reset forgets the last pass's token failure; the counts are back to zero between passes.
func (w *waiting) reset() { w.lastTokenError.Store(nil) }

// attrs are the progress line's: a "waiting" group with the kinds some rotation waits for, and the
// latest token request failure while a rotation waits on the token endpoint.
func (w *waiting) attrs() []any {
	var group []any
	for k := range waitKinds {
		if n := w.n[k].Load(); n > 0 {
			group = append(group, slog.Int64(waitKeys[k], n))
		}
	}
	if len(group) == 0 {
		return nil
	}
	attrs := []any{slog.Group("waiting", group...)}
	if last := w.lastTokenError.Load(); last != nil && w.n[waitTokenEndpoint].Load()+w.n[waitTokenRetry].Load() > 0 {
		attrs = append(attrs, slog.String("last_token_error", *last))
	}
	return attrs
}
