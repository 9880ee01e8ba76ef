package main

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"token-rotator/config"
	"token-rotator/rotate"
)

// A pass that outlasts a reused token's expiry (plus reusedMargin) still gets its extra pass,
// at once: an instant already past would never run.
func TestExtraPassWhoseInstantPassedDuringThePass(t *testing.T) {
	cfg := &config.Config{Schedule: "0 0 1 1 *"}
	var err error
	if cfg.Cron, err = cron.ParseStandard(cfg.Schedule); err != nil {
		t.Fatal(err)
	}
	var passes atomic.Int32
	pass := func(context.Context) []rotate.Result {
		if passes.Add(1) == 1 {
			expires := time.Now().Add(100 * time.Millisecond)
			time.Sleep(reusedMargin + time.Second) // a long pass: the reused token expired meanwhile
			return []rotate.Result{{Client: "cc", Outcome: rotate.Reused, ExpiresAt: expires}}
		}
		return []rotate.Result{{Client: "cc", Outcome: rotate.Rotated, ExpiresAt: time.Now().Add(2 * time.Hour)}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon(ctx, pass, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	time.Sleep(reusedMargin + 4*time.Second)
	cancel()
	<-done
	if n := passes.Load(); n != 2 {
		t.Errorf("%d passes; want 2: the reused token expired during the first, so an extra pass at once", n)
	}
}
