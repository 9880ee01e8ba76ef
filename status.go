package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"token-rotator/rotate"
)

// runStatus is `token-rotator status`: a table of every client and connection (grant, expiry,
// time left, last success, state), flagging tokens that will expire before the next scheduled run.
// It reads Vault only. Exit 1 when any token is flagged or in a failed state.
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
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"next_run": next.UTC(), "targets": states}); err != nil {
			return err
		}
	} else {
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "CLIENT\tGRANT\tEXPIRES AT\tLEFT\tLAST SUCCESS\tSTATE\t")
		for _, s := range states {
			exp, left := "-", "-"
			if !s.ExpiresAt.IsZero() {
				exp, left = s.ExpiresAt.UTC().Format(time.RFC3339), s.ExpiresAt.Sub(now).Round(time.Minute).String()
			}
			state := s.Status
			if s.Problem != "" {
				state = "error: " + s.Problem
			} else if s.Error != "" && s.Status != rotate.StatusOK {
				state += ": " + s.Error
			}
			if s.ExpiresBeforeNextRun {
				state = "EXPIRES BEFORE NEXT RUN " + state
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Name, s.Grant, exp, left, dash(s.LastSuccess), dash(state))
		}
		w.Flush()
		fmt.Fprintf(stdout, "next scheduled run: %s (%s)\n", next.UTC().Format(time.RFC3339), job.cfg.Schedule)
	}
	if bad {
		return errClientsFailed
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
