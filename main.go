// Command token-rotator keeps OAuth 2 access tokens for the Stora Public API fresh in HashiCorp
// Vault. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // CRON_TZ= zones in images without a zoneinfo database
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-signals
		cancel() // stop scheduling; a rotation in flight finishes its write-back
		<-signals
		fmt.Fprintln(os.Stderr, "token-rotator: second signal: exiting without waiting")
		os.Exit(exitInterrupted)
	}()
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitInterrupted is the exit code after a second SIGTERM or SIGINT cut a rotation short.
const exitInterrupted = 3

// errClientsFailed is returned by run when the job ran but at least one client failed.
var errClientsFailed = errors.New("one or more clients failed")

// exitCode maps run's error to the documented exit codes: 0 every client fine (a daemon: stopped
// by a signal), 1 a client failed (--once and the commands), 2 a configuration or start-up error
// (printed here, since nothing logged it).
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errClientsFailed):
		return 1
	default:
		fmt.Fprintln(stderr, "token-rotator:", err)
		return 2
	}
}
