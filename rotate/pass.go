package rotate

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Pass rotates every target that is due (the configured clients and the connections listed
// under their prefixes, this shard's share), Concurrency at a time, and returns one Result per
// target in order. A cancelled ctx, or PassDeadline passing, stops the pass from starting further
// targets (they are Skipped); a rotation already past its claim runs to the end of its write-back.
// A long pass logs its progress every ProgressEvery, and every pass ends with one summary line.
func (r *Rotator) Pass(ctx context.Context) []Result {
	start := r.now()
	r.holder() // settle the holder name before the workers read it
	r.sharedMu.Lock()
	r.shared = map[string]*sharedEntry{}
	r.sharedMu.Unlock()
	r.waits.reset()
	r.warnMountRetention(ctx) // asks Vault at the first pass of the process only
	ts, results := r.targets(ctx, r.Shard, true)
	if r.Observer != nil {
		names := make([]string, len(ts))
		for i, t := range ts {
			names[i] = t.name
		}
		r.Observer.Targets(names, len(results) == 0)
	}
	for _, res := range results { // prefixes that could not be listed
		r.finish(res, map[bool]string{true: "shutting down"}[res.Outcome == Skipped], 0)
	}
	r.prefetch(ctx, ts)
	startCtx := ctx // when it is done, no further target starts
	if r.PassDeadline > 0 {
		var cancel context.CancelFunc
		startCtx, cancel = context.WithTimeout(ctx, r.PassDeadline)
		defer cancel()
	}
	out := make([]Result, len(ts))
	var done atomic.Int64
	jobs := make(chan int)
	var wg sync.WaitGroup
	// Twice as many workers as token requests allowed at once: while Concurrency of them wait on
	// the token endpoint, the others read, claim and write back, so Vault's latency does not stand
	// between the endpoint and its next request.
	r.grantSlots = make(chan struct{}, max(1, r.Concurrency))
	for w := 0; w < 2*max(1, r.Concurrency); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				out[i] = r.runTarget(ctx, startCtx, ts[i])
				done.Add(1)
			}
		}()
	}
	stop := r.progress(start, len(ts), &done)
	drain := r.startStatusWriters()
feed:
	for i := range ts {
		select {
		case jobs <- i:
		case <-startCtx.Done():
			for j := i; j < len(ts); j++ {
				out[j] = Result{Client: ts[j].name, Outcome: Skipped}
				r.finish(out[j], skipReason(ctx), 0)
			}
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	drain()
	stop()
	results = append(results, out...)
	r.summary(results, r.now().Sub(start))
	if r.Observer != nil {
		r.Observer.PassDone()
	}
	return results
}

// prefetch has the store learn, in a few requests, the pre-flight's answers for every path the
// pass may write, where it can: anew each pass, so that a policy changed since is what counts.
func (r *Rotator) prefetch(ctx context.Context, ts []target) {
	p, ok := r.Store.(capabilityPrefetcher)
	if !ok || r.DryRun || len(ts) == 0 {
		return
	}
	paths := make([]string, 0, 2*len(ts))
	for _, t := range ts {
		paths = append(paths, t.secret)
		if t.output != t.secret {
			paths = append(paths, t.output)
		}
	}
	p.PrefetchCapabilities(ctx, paths)
}

// capabilityPrefetcher is a store that can learn the pre-flight's answers for many paths at once.
type capabilityPrefetcher interface {
	PrefetchCapabilities(ctx context.Context, paths []string)
}

// runTarget rotates one target unless the pass has stopped starting new ones.
func (r *Rotator) runTarget(ctx, startCtx context.Context, t target) Result {
	if startCtx.Err() != nil {
		res := Result{Client: t.name, Outcome: Skipped}
		r.finish(res, skipReason(ctx), 0)
		return res
	}
	began := time.Now()
	res, why := r.rotate(ctx, startCtx, t)
	r.finish(res, why, time.Since(began))
	return res
}

// finish reports one target's result: its log line, and to the Observer.
func (r *Rotator) finish(res Result, why string, took time.Duration) {
	r.log(res, why)
	if r.Observer != nil {
		r.Observer.Rotation(res, took)
	}
}

func skipReason(ctx context.Context) string {
	if ctx.Err() != nil {
		return "shutting down"
	}
	return "pass deadline reached; next pass"
}

// progress logs how far a pass has got every ProgressEvery until the returned stop is called,
// and what its rotations are waiting for: the token endpoint's answer, a retry's backoff, the rate
// limit, a request slot, an unavailable Vault (with the latest token request failure while any
// waits on the token endpoint).
func (r *Rotator) progress(start time.Time, total int, done *atomic.Int64) (stop func()) {
	every := orDefault(r.ProgressEvery, 15*time.Second)
	t := time.NewTicker(every)
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-t.C:
				attrs := []any{"done", done.Load(), "total", total, "elapsed", r.now().Sub(start).Round(time.Second).String()}
				r.logger().Info("pass progress", append(attrs, r.waits.attrs()...)...)
			case <-quit:
				return
			}
		}
	}()
	return func() { t.Stop(); close(quit); <-finished }
}

// summary logs the one line that ends each pass.
func (r *Rotator) summary(results []Result, took time.Duration) {
	n := map[Outcome]int{}
	for _, res := range results {
		n[res.Outcome]++
	}
	attrs := []any{"targets", len(results), "rotated", n[Rotated], "not_due", n[NotDue],
		"claimed_elsewhere", n[ClaimedElsewhere], "rotated_elsewhere", n[RotatedElsewhere],
		"failed", n[Failed], "skipped", n[Skipped]}
	for _, o := range []Outcome{Reused, Deleted, AccessTokenRefused} { // rare: named only when seen
		if n[o] > 0 {
			attrs = append(attrs, string(o), n[o])
		}
	}
	attrs = append(attrs, "duration", took.Round(time.Millisecond).String())
	if r.DryRun {
		attrs = append(attrs, "dry_run", n[DryRun])
	}
	if r.Shard.Count > 1 {
		attrs = append(attrs, "shard", r.Shard.String())
	}
	r.logger().Info("pass done", attrs...)
}

// log writes the one line per client per pass. It never logs a token value.
func (r *Rotator) log(res Result, why string) {
	if res.Err != nil {
		res.Err = errors.New(oneLine(res.Err)) // one line per client
	}
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
	if res.RefreshTokenKept {
		attrs = append(attrs, slog.String("note", "the token endpoint kept the refresh token (it does not rotate refresh tokens)"))
	}
	level, msg := slog.LevelInfo, ""
	switch res.Outcome {
	case Failed:
		level, msg = slog.LevelError, "rotation failed"
		attrs = append(attrs, slog.String("error", res.Err.Error()))
	case AccessTokenRefused:
		level, msg = slog.LevelError, "refresh token stored, access token refused"
		attrs = append(attrs, slog.String("error", res.Err.Error()))
	case Reused:
		msg = "access token handed back unchanged"
	case Deleted:
		level, msg = slog.LevelWarn, "secret deleted during its rotation"
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
