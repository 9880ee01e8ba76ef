package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
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

// TestDaemonLogsWhenTheSchedulerRunsNext: after a pass longer than a second (robfig/cron's
// @every rounds to whole seconds), the "next pass" line names the instant the next pass starts:
// the scheduler's, counted from when it started this pass, not the schedule counted from the
// pass's end.
func TestDaemonLogsWhenTheSchedulerRunsNext(t *testing.T) {
	cfg := &config.Config{Schedule: "@every 2s"}
	var err error
	if cfg.Cron, err = cron.ParseStandard(cfg.Schedule); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var starts []time.Time
	ctx, cancel := context.WithCancel(context.Background())
	pass := func(pctx context.Context) []rotate.Result {
		mu.Lock()
		starts = append(starts, time.Now())
		n := len(starts)
		mu.Unlock()
		if n == 3 {
			cancel()
			<-pctx.Done()
			return nil
		}
		time.Sleep(1500 * time.Millisecond)
		return nil
	}
	var logs testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- daemon(ctx, pass, cfg, slog.New(slog.NewJSONHandler(&logs, nil))) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		t.Fatalf("no third pass in 20 s on a 2 s schedule:\n%s", logs.String())
	}
	var next []time.Time
	for _, l := range logLines(t, logs.String()) {
		if l.Msg == "next pass" {
			next = append(next, l.At)
		}
	}
	if len(next) != 2 {
		t.Fatalf("%d \"next pass\" lines after 2 whole passes, want 2:\n%s", len(next), logs.String())
	}
	for i, at := range next {
		// The scheduler starts a pass at its instant, give or take a busy machine.
		if started := starts[i+1]; started.Before(at.Add(-100*time.Millisecond)) || started.After(at.Add(time.Second)) {
			t.Errorf("pass %d logged the next pass at %s; it started at %s", i+1, at.Format(time.StampMilli), started.Format(time.StampMilli))
		}
	}
}

// TestDaemonShutdownLines: SIGTERM while a pass is in flight logs that the daemon waits for it,
// then the pass's own lines, then that the daemon stopped; while idle, no pass is said to be in
// flight. The daemon returns nil either way.
func TestDaemonShutdownLines(t *testing.T) {
	cfg := &config.Config{Schedule: "0 0 1 1 *"}
	var err error
	if cfg.Cron, err = cron.ParseStandard(cfg.Schedule); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		busy bool
		want []string
	}{
		{"in flight", true, []string{"daemon started", "shutting down: waiting for the pass in flight", "pass done", "daemon stopped"}},
		{"idle", false, []string{"daemon started", "pass done", "next pass", "shutting down", "daemon stopped"}},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		var logs testenv.SyncBuffer
		logger := slog.New(slog.NewJSONHandler(&logs, nil))
		passed := make(chan struct{})
		pass := func(pctx context.Context) []rotate.Result {
			if tc.busy {
				cancel() // SIGTERM during the pass
				<-pctx.Done()
			}
			logger.Info("pass done")
			close(passed)
			return []rotate.Result{{Client: "cc", Outcome: rotate.Failed, Err: errors.New("x")}}
		}
		done := make(chan error, 1)
		go func() { done <- daemon(ctx, pass, cfg, logger) }()
		<-passed
		for !strings.Contains(logs.String(), `"next pass"`) && !tc.busy {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: daemon returned %v, want nil after a clean shutdown", tc.name, err)
		}
		var got []string
		for _, l := range logLines(t, logs.String()) {
			got = append(got, l.Msg)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: lines %q, want %q", tc.name, got, tc.want)
		}
	}
}

// logLine is one line of the daemon's JSON log.
type logLine struct {
	Msg string    `json:"msg"`
	At  time.Time `json:"at"`
}

func logLines(t *testing.T, logs string) []logLine {
	t.Helper()
	var out []logLine
	for _, s := range strings.Split(strings.TrimSpace(logs), "\n") {
		var l logLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("%v: %s", err, s)
		}
		out = append(out, l)
	}
	return out
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
		done <- daemon(ctx, pass, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
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
	// At the default level (info): a skipped scheduled pass is a warning an operator sees.
	if !strings.Contains(logs.String(), "panic") || !strings.Contains(logs.String(), "level=WARN msg=\"a pass is still running: the scheduled pass is skipped\"") {
		t.Errorf("the daemon's log at info level names no recovered panic or skipped run:\n%s", logs.String())
	}
}
