package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/term"
)

// newLogger builds the one logger of the process. format auto means tint's text when w is a
// terminal and JSON otherwise (Kubernetes, files, pipes). Text is coloured only on a terminal and
// without NO_COLOR.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	f, ok := w.(*os.File)
	terminal := ok && term.IsTerminal(int(f.Fd()))
	if format == "auto" {
		format = "json"
		if terminal {
			format = "text"
		}
	}
	switch format {
	case "text":
		noColor := !terminal || os.Getenv("NO_COLOR") != ""
		return slog.New(tint.NewHandler(w, &tint.Options{Level: lv, TimeFormat: time.DateTime, NoColor: noColor})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	}
	return nil, fmt.Errorf("--log-format %q: want auto, text or json", format)
}

// cronLogger lets robfig/cron log through slog.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) {
	if msg == "skip" { // SkipIfStillRunning: a scheduled pass not run, which an operator must see
		c.l.Warn("a pass is still running: the scheduled pass is skipped", kv...)
		return
	}
	c.l.Debug("cron: "+msg, kv...)
}
func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append([]any{"error", err}, kv...)...)
}
