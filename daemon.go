package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"

	"token-rotator/config"
	"token-rotator/rotate"
)

// daemon runs a pass at once and then on the configured schedule until ctx is cancelled. On
// cancellation it stops scheduling and waits for a pass in flight to finish its write-back.
// It returns errClientsFailed when the last pass had a failed client.
func daemon(ctx context.Context, pass func(context.Context) []rotate.Result, cfg *config.Config, logger *slog.Logger) error {
	cl := cronLogger{logger}
	var lastFailed atomic.Bool
	job := cron.NewChain(cron.Recover(cl), cron.SkipIfStillRunning(cl)).Then(cron.FuncJob(func() {
		lastFailed.Store(rotate.AnyFailed(pass(ctx)))
		if ctx.Err() == nil {
			logger.Info("next pass", "at", cfg.Cron.Next(time.Now()).UTC(), "schedule", cfg.Schedule)
		}
	}))
	c := cron.New(cron.WithLogger(cl), cron.WithLocation(time.UTC))
	c.Schedule(cfg.Cron, job)
	logger.Info("daemon started", "schedule", cfg.Schedule)
	job.Run()
	c.Start()
	<-ctx.Done()
	logger.Info("shutting down: waiting for a pass in flight")
	<-c.Stop().Done()
	if lastFailed.Load() {
		return errClientsFailed
	}
	return nil
}
