package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"token-rotator/config"
	"token-rotator/rotate"
)

// daemon runs a pass at once and then on the configured schedule until ctx is cancelled. On
// cancellation it stops scheduling, starts no pass, and waits for a pass in flight to finish its
// write-back. It returns nil then, whatever the passes did: its exit code says how the daemon
// stopped; how passes went is in the logs, the metrics and status.
//
// A pass in which the token endpoint handed back an access token already stored (token reuse)
// also schedules one extra pass just after that token expires, when the schedule would not run
// before then: the server issues a new token only once the old one is gone, and apps would
// otherwise hold an expired token until the next scheduled run.
func daemon(ctx context.Context, pass func(context.Context) []rotate.Result, cfg *config.Config, logger *slog.Logger) error {
	// Passes see the shutdown only once it is logged, so that its line comes before theirs.
	passCtx, stopPasses := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPasses()
	var (
		mu       sync.Mutex
		stopping bool           // no pass starts once set
		inFlight int            // passes started and not finished
		passes   sync.WaitGroup // added to only while !stopping
	)
	cl := cronLogger{logger}
	c := cron.New(cron.WithLogger(cl), cron.WithLocation(time.UTC))
	extra := &extraPasses{}
	var job cron.Job
	var scheduled cron.EntryID // the schedule's own entry
	// Recover inside SkipIfStillRunning: robfig/cron's skip wrapper releases its slot only when the
	// job returns, so a panic recovered outside it would leave every later pass skipped.
	job = cron.NewChain(cron.SkipIfStillRunning(cl), cron.Recover(cl)).Then(cron.FuncJob(func() {
		mu.Lock()
		if stopping {
			mu.Unlock()
			return
		}
		inFlight++
		passes.Add(1)
		mu.Unlock()
		defer func() {
			mu.Lock()
			inFlight--
			mu.Unlock()
			passes.Done()
		}()
		results := pass(passCtx)
		if passCtx.Err() != nil {
			return
		}
		// The scheduler set the entry's next time when it started this pass (at start, when it
		// started): that, not the schedule from now, is when it runs next.
		var next time.Time
		for _, e := range c.Entries() {
			if e.ID == scheduled {
				next = e.Next
			} else if e.Next.IsZero() { // extra passes that have run: never again
				c.Remove(e.ID)
			}
		}
		if at, ok := afterReusedExpiry(results, next); ok && extra.add(at) {
			if soon := time.Now().Add(time.Second); at.Before(soon) {
				at = soon // the instant passed during the pass: at once
			}
			c.Schedule(onceAt(at), job)
			logger.Info("extra pass when a reused access token expires", "at", at.UTC(), "next_scheduled", next.UTC())
		}
		logger.Info("next pass", "at", next.UTC(), "schedule", cfg.Schedule)
	}))
	scheduled = c.Schedule(cfg.Cron, job)
	logger.Info("daemon started", "schedule", cfg.Schedule)
	c.Start() // the first scheduled run counts from here, as the first pass starts
	go job.Run()
	<-ctx.Done()
	stopped := c.Stop()
	mu.Lock()
	stopping = true
	busy := inFlight > 0
	mu.Unlock()
	if busy {
		logger.Info("shutting down: waiting for the pass in flight")
	} else {
		logger.Info("shutting down")
	}
	stopPasses()
	passes.Wait()
	<-stopped.Done()
	logger.Info("daemon stopped")
	return nil
}

// reusedMargin is how long after a reused access token's expiry the extra pass runs: the token
// endpoint must see the old token as expired, or it hands it back again.
const reusedMargin = 5 * time.Second

// afterReusedExpiry returns when an extra pass should run: just after the earliest expiry of an
// access token the token endpoint handed back unchanged in results, if that comes before next,
// the schedule's next run.
func afterReusedExpiry(results []rotate.Result, next time.Time) (time.Time, bool) {
	var at time.Time
	for _, r := range results {
		if r.Outcome == rotate.Reused && !r.ExpiresAt.IsZero() && (at.IsZero() || r.ExpiresAt.Before(at)) {
			at = r.ExpiresAt
		}
	}
	if at.IsZero() {
		return time.Time{}, false
	}
	at = at.Add(reusedMargin)
	return at, at.Before(next)
}

// extraPasses remembers the extra passes scheduled, so that each instant is scheduled once.
type extraPasses struct {
	mu sync.Mutex
	at map[time.Time]bool
}

// add reports whether at is new, and remembers it; instants past are forgotten.
func (e *extraPasses) add(at time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for t := range e.at {
		if t.Before(time.Now().Add(-time.Minute)) {
			delete(e.at, t)
		}
	}
	at = at.Truncate(time.Second)
	if e.at[at] {
		return false
	}
	if e.at == nil {
		e.at = map[time.Time]bool{}
	}
	e.at[at] = true
	return true
}

// onceAt is a cron.Schedule that fires once, at the instant it holds (robfig/cron runs an entry
// whose next time is zero never again).
type onceAt time.Time

// Next is the instant, if t is before it; zero after.
func (o onceAt) Next(t time.Time) time.Time {
	if t.Before(time.Time(o)) {
		return time.Time(o)
	}
	return time.Time{}
}
