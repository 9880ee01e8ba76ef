package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"token-rotator/rotate"
)

// runStatus is `token-rotator status`: a table of every client and connection (grant, expiry,
// last success, state), flagging tokens that will expire before the next scheduled run. It reads
// Vault only. Exit 1 when any token is flagged or in a failed state.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token-rotator status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "configuration file")
	output := fs.String("output", "table", "table or json")
	var clients stringList
	fs.Var(&clients, "client", "only this client, or this connection: client/connection (repeatable)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("--output %q: want table or json", *output)
	}
	job, err := setUp(ctx, *configPath, clients, "warn", "text", stderr)
	if err != nil {
		return err
	}
	now := time.Now()
	next := job.cfg.Cron.Next(now)
	states := job.rotator.Report(ctx, next)
	bad := false
	for _, s := range states {
		bad = bad || s.ExpiresBeforeNextRun || s.Problem != "" || s.Stuck()
	}
	if *output == "json" {
		rows := make([]statusRow, len(states))
		for i, s := range states {
			rows[i] = newStatusRow(s)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(statusReport{NextRun: next.UTC(), Schedule: job.cfg.Schedule, Targets: rows}); err != nil {
			return err
		}
	} else {
		writeStatusTable(stdout, states, now)
		fmt.Fprintf(stdout, "next scheduled run: %s, %s (%s)\n", next.UTC().Format(time.RFC3339), until(next.Sub(now)), job.cfg.Schedule)
	}
	if bad {
		return errClientsFailed
	}
	return nil
}

// statusReport is `status --output json`, documented in README ("token-rotator status").
type statusReport struct {
	NextRun  time.Time   `json:"next_run"`
	Schedule string      `json:"schedule"`
	Targets  []statusRow `json:"targets"`
}

// statusRow is one target in `status --output json`. Every row has every key, null where the
// value is not known; times are RFC 3339 in UTC, counts numbers.
type statusRow struct {
	Name                  string     `json:"name"`
	Grant                 string     `json:"grant"`
	Status                *string    `json:"status"`
	ExpiresAt             *time.Time `json:"expires_at"`
	ExpiresBeforeNextRun  bool       `json:"expires_before_next_run"`
	RefreshTokenExpiresAt *time.Time `json:"refresh_token_expires_at"`
	RefreshTokenWarning   *string    `json:"refresh_token_warning"`
	LastSuccess           *time.Time `json:"last_success"`
	LastAttempt           *time.Time `json:"last_attempt"`
	ConsecutiveFailures   *int       `json:"consecutive_failures"`
	Error                 *string    `json:"error"`
	Problem               *string    `json:"problem"`
}

// statusError is the state shown for a target whose state could not be read (Problem says why).
const statusError = "error"

func newStatusRow(s rotate.TargetState) statusRow {
	row := statusRow{Name: s.Name, Grant: s.Grant, ExpiresBeforeNextRun: s.ExpiresBeforeNextRun,
		Status: orNull(state(s)), Error: orNull(s.Error), Problem: orNull(s.Problem),
		LastSuccess: timeOrNull(s.LastSuccess), LastAttempt: timeOrNull(s.LastAttempt),
		RefreshTokenWarning: orNull(s.RefreshWarning)}
	if !s.ExpiresAt.IsZero() {
		t := s.ExpiresAt.UTC()
		row.ExpiresAt = &t
	}
	if !s.RefreshExpiresAt.IsZero() {
		t := s.RefreshExpiresAt.UTC()
		row.RefreshTokenExpiresAt = &t
	}
	if n, err := strconv.Atoi(s.Failures); err == nil {
		row.ConsecutiveFailures = &n
	}
	return row
}

// state is the target's state in one word: its status, or error when it could not be read.
func state(s rotate.TargetState) string {
	if s.Problem != "" {
		return statusError
	}
	return s.Status
}

func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// timeOrNull parses a time recorded in metadata (RFC 3339); nil when none is, or it does not parse.
func timeOrNull(s string) *time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil
	}
	t = t.UTC()
	return &t
}

// tableWidth is what a row's detail lines (an error, a flag) are wrapped to: a common terminal.
const tableWidth = 100

// writeStatusTable writes one short row per target, times relative to now; what does not fit a
// row (the expiry flag, an error) goes on indented lines under it, wrapped to tableWidth. The
// last column is not padded.
func writeStatusTable(out io.Writer, states []rotate.TargetState, now time.Time) {
	rows := [][]string{{"CLIENT", "GRANT", "EXPIRES", "LAST SUCCESS", "STATE"}}
	details := [][]string{nil}
	for _, s := range states {
		expires, last := "-", "-"
		if !s.ExpiresAt.IsZero() {
			expires = until(s.ExpiresAt.Sub(now))
		}
		if t := timeOrNull(s.LastSuccess); t != nil {
			last = until(t.Sub(now))
		}
		rows = append(rows, []string{s.Name, dash(s.Grant), expires, last, dash(state(s))})
		var d []string
		if s.ExpiresBeforeNextRun {
			d = append(d, "EXPIRES BEFORE NEXT RUN")
		}
		if s.RefreshWarning != "" {
			d = append(d, "warning: "+s.RefreshWarning)
		}
		if s.Problem != "" {
			d = append(d, "error: "+s.Problem)
		} else if s.Error != "" && s.Status != rotate.StatusOK {
			d = append(d, "error: "+s.Error)
		}
		details = append(details, d)
	}
	widths := make([]int, len(rows[0])-1)
	for _, r := range rows {
		for i := range widths {
			widths[i] = max(widths[i], len(r[i]))
		}
	}
	for i, r := range rows {
		var b strings.Builder
		for j, cell := range r[:len(widths)] {
			fmt.Fprintf(&b, "%-*s  ", widths[j], cell)
		}
		fmt.Fprintln(out, b.String()+r[len(widths)])
		for _, d := range details[i] {
			for _, line := range wrap(d, tableWidth-4, 2) {
				fmt.Fprintln(out, "    "+line)
			}
		}
	}
}

// until says how far from now a time d away is, to the minute: "in 1h52m", "3m ago", "<1m ago".
func until(d time.Duration) string {
	switch r := d.Round(time.Minute); {
	case r > 0:
		return "in " + short(r)
	case r < 0:
		return short(-r) + " ago"
	case d >= 0:
		return "in <1m"
	}
	return "<1m ago"
}

// short is a whole-minute duration without its zero units: 2h, 1h52m, 5m; days past 48 hours.
func short(d time.Duration) string {
	h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case h >= 48:
		return fmt.Sprintf("%dd", h/24)
	case h == 0:
		return fmt.Sprintf("%dm", m)
	case m == 0:
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%dh%dm", h, m)
}

// wrap breaks text into lines of at most width characters at spaces (a longer word stays whole),
// continuation lines indented by indent spaces.
func wrap(text string, width, indent int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) > width:
			lines = append(lines, line)
			line = strings.Repeat(" ", indent) + word
		default:
			line += " " + word
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
