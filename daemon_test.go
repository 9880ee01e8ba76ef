package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"token-rotator/config"
	"token-rotator/internal/testenv"
	"token-rotator/rotate"
)

// TestDaemonRunsAPassAfterAReusedTokenExpires: a server that hands back the stored access token
// issues a new one only once the old one has expired; the daemon comes back just after that
// instead of leaving apps with an expired token until the next scheduled run.
func TestDaemonRunsAPassAfterAReusedTokenExpires(t *testing.T) {
	cfg := &config.Config{Schedule: "0 0 1 1 *"} // next run months away
	var err error
	if cfg.Cron, err = cron.ParseStandard(cfg.Schedule); err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(time.Second)
	var passes atomic.Int32
	second := make(chan time.Time, 1)
	pass := func(context.Context) []rotate.Result {
		switch passes.Add(1) {
		case 1:
			return []rotate.Result{{Client: "cc", Outcome: rotate.Reused, ExpiresAt: expires}}
		case 2:
			second <- time.Now()
		}
		return []rotate.Result{{Client: "cc", Outcome: rotate.Rotated, ExpiresAt: time.Now().Add(2 * time.Hour)}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon(ctx, pass, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	select {
	case at := <-second:
		if at.Before(expires) || at.After(expires.Add(reusedMargin+2*time.Second)) {
			t.Errorf("extra pass at %v, want just after the reused token's expiry %v", at, expires)
		}
	case <-time.After(reusedMargin + 10*time.Second):
		t.Errorf("no extra pass after the reused token expired (%d passes)", passes.Load())
	}
	cancel()
	<-done
	if n := passes.Load(); n != 2 {
		t.Errorf("%d passes, want 2: the first and one extra", n)
	}
}

func TestNoExtraPassWithoutReuse(t *testing.T) {
	next := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name    string
		results []rotate.Result
		want    bool
	}{
		{"rotated", []rotate.Result{{Outcome: rotate.Rotated, ExpiresAt: time.Now().Add(time.Minute)}}, false},
		{"reused, expiring before the next run", []rotate.Result{{Outcome: rotate.Reused, ExpiresAt: time.Now().Add(time.Minute)}}, true},
		{"reused, expiring after the next run", []rotate.Result{{Outcome: rotate.Reused, ExpiresAt: time.Now().Add(2 * time.Hour)}}, false},
	} {
		if _, got := afterReusedExpiry(tc.results, next); got != tc.want {
			t.Errorf("%s: extra pass %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestDaemonExitsAsItsLastPass: after SIGTERM the daemon's exit code is that of its last pass.
func TestDaemonExitsAsItsLastPass(t *testing.T) {
	cfg := &config.Config{Schedule: "0 0 1 1 *"}
	var err error
	if cfg.Cron, err = cron.ParseStandard(cfg.Schedule); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		outcome rotate.Outcome
		want    error
	}{{rotate.Failed, errClientsFailed}, {rotate.Rotated, nil}} {
		ctx, cancel := context.WithCancel(context.Background())
		pass := func(context.Context) []rotate.Result {
			defer cancel() // SIGTERM after the first pass
			return []rotate.Result{{Client: "cc", Outcome: tc.outcome, Err: errors.New("x")}}
		}
		if got := daemon(ctx, pass, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); !errors.Is(got, tc.want) || (tc.want == nil && got != nil) {
			t.Errorf("last pass %s: daemon returned %v, want %v", tc.outcome, got, tc.want)
		}
	}
}

// TestDaemonRunsOnItsSchedule: after the first pass, passes keep coming on the schedule.
func TestDaemonRunsOnItsSchedule(t *testing.T) {
	cfg := &config.Config{Schedule: "@every 1s"}
	var err error
	if cfg.Cron, err = cron.ParseStandard(cfg.Schedule); err != nil {
		t.Fatal(err)
	}
	var passes atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	pass := func(context.Context) []rotate.Result {
		if passes.Add(1) == 3 {
			cancel()
		}
		return []rotate.Result{{Client: "cc", Outcome: rotate.Reused, ExpiresAt: time.Now().Add(time.Hour)}}
	}
	done := make(chan error, 1)
	go func() { done <- daemon(ctx, pass, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Errorf("%d passes in 10 s on a 1 s schedule, want 3", passes.Load())
	}
}

// TestDaemonSkipsOverlapsAndSurvivesAPanic: a pass still running when the next is due makes that
// one skip, and a pass that panics is recovered, logged, and followed by the next.
func TestDaemonSkipsOverlapsAndSurvivesAPanic(t *testing.T) {
	cfg := &config.Config{Schedule: "@every 1s"}
	var err error
	if cfg.Cron, err = cron.ParseStandard(cfg.Schedule); err != nil {
		t.Fatal(err)
	}
	var passes, running, most atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	pass := func(context.Context) []rotate.Result {
		n := passes.Add(1)
		now := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		switch n {
		case 2:
			panic("a pass that panics")
		case 3:
			time.Sleep(2500 * time.Millisecond) // two scheduled runs fall due meanwhile
		case 5:
			cancel()
		}
		return nil
	}
	var logs testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- daemon(ctx, pass, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		t.Fatalf("%d passes in 20 s: the daemon stopped scheduling after a panic or an overlap\n%s", passes.Load(), logs.String())
	}
	if most.Load() != 1 {
		t.Errorf("%d passes ran at once, want 1", most.Load())
	}
	if !strings.Contains(logs.String(), "panic") || !strings.Contains(logs.String(), "skip") {
		t.Errorf("the daemon's log names no recovered panic or skipped run:\n%s", logs.String())
	}
}
