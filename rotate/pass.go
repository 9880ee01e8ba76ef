package rotate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"token-rotator/oauth"
	"token-rotator/vault"
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
	ts, results := r.targets(ctx)
	if p, ok := r.Store.(capabilityPrefetcher); ok && !r.DryRun && len(ts) > 1 {
		paths := make([]string, 0, 2*len(ts))
		for _, t := range ts {
			paths = append(paths, t.secret)
			if t.output != t.secret {
				paths = append(paths, t.output)
			}
		}
		p.PrefetchCapabilities(ctx, paths)
	}
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
				r.log(out[j], skipReason(ctx))
			}
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	drain()
	stop()
	results = append(results, out...)
	for _, res := range results[:len(results)-len(out)] {
		r.log(res, "")
	}
	r.summary(results, r.now().Sub(start))
	if r.Observer != nil {
		for _, res := range results[:len(results)-len(out)] {
			r.Observer.Rotation(res, 0)
		}
		r.Observer.PassDone()
	}
	return results
}

// capabilityPrefetcher is a store that can learn the pre-flight's answers for many paths at once.
type capabilityPrefetcher interface {
	PrefetchCapabilities(ctx context.Context, paths []string)
}

// runTarget rotates one target unless the pass has stopped starting new ones.
func (r *Rotator) runTarget(ctx, startCtx context.Context, t target) Result {
	if startCtx.Err() != nil {
		res := Result{Client: t.name, Outcome: Skipped}
		r.log(res, skipReason(ctx))
		return res
	}
	began := time.Now()
	res, why := r.rotate(ctx, startCtx, t)
	r.log(res, why)
	if r.Observer != nil {
		r.Observer.Rotation(res, time.Since(began))
	}
	return res
}

func skipReason(ctx context.Context) string {
	if ctx.Err() != nil {
		return "shutting down"
	}
	return "pass deadline reached; next pass"
}

// progress logs how far a pass has got every ProgressEvery until the returned stop is called.
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
				r.logger().Info("pass progress", "done", done.Load(), "total", total, "elapsed", r.now().Sub(start).Round(time.Second).String())
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
		"failed", n[Failed], "skipped", n[Skipped], "duration", took.Round(time.Millisecond).String()}
	if r.DryRun {
		attrs = append(attrs, "dry_run", n[DryRun])
	}
	if r.Shard.Count > 1 {
		attrs = append(attrs, "shard", r.Shard.String())
	}
	r.logger().Info("pass done", attrs...)
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

// claim writes this process's claim to the credential secret, check-and-set on the version read,
// and returns the secret as claimed. elsewhere is set when another process won the race.
func (r *Rotator) claim(ctx context.Context, path string, secret *vault.Secret) (claimed *vault.Secret, elsewhere bool, err error) {
	data := withClaim(secret.Data, r.holder(), r.now(), orDefault(r.ClaimTTL, 15*time.Minute))
	v, err := r.Store.Write(ctx, path, data, secret.Version)
	if errors.Is(err, vault.ErrVersionMismatch) {
		// Lost the race, or won it and lost the answer: the client retried a write that had
		// landed. Only the secret as it is now can tell.
		now, rerr := r.Store.Read(ctx, path)
		if rerr != nil {
			return nil, false, rerr
		}
		if c := claimOf(now.Data); c != nil && c.Holder == r.holder() && now.Version == secret.Version+1 {
			return now, false, nil
		}
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
	if res.Err != nil {
		res.Err = errors.New(strings.Join(strings.Fields(res.Err.Error()), " ")) // one line per client
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
