package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// runValidate is `token-rotator validate`: the config, the Vault login, and for each client and
// connection whether its secrets hold what its grant needs and the job's Vault token may write
// what a rotation writes. No token request, nothing written. Exit 0 all good, 1 a problem, 2 the
// config or the login failed.
func runValidate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token-rotator validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "configuration file")
	var clients stringList
	fs.Var(&clients, "client", "only this client, or this connection: client/connection (repeatable)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	job, err := setUp(ctx, *configPath, clients, "warn", "text", stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "config %s: ok (%d clients)\n", *configPath, len(job.cfg.Clients))
	fmt.Fprintf(stdout, "vault login (%s), mount %s (KV v%d): ok\n", job.cfg.Vault.Auth.Method, job.cfg.Vault.KVMount, job.store.KVVersion())
	failed := 0
	for _, c := range job.rotator.Validate(ctx) {
		switch {
		case c.Problem != "":
			failed++
			fmt.Fprintf(stdout, "%s: %s\n", c.Name, c.Problem)
		case c.Note != "":
			fmt.Fprintf(stdout, "%s: ok (%s)\n", c.Name, c.Note)
		default:
			fmt.Fprintf(stdout, "%s: ok\n", c.Name)
		}
		if c.Warning != "" { // to act on before it fails; not a problem yet
			fmt.Fprintf(stdout, "%s: warning: %s\n", c.Name, c.Warning)
		}
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "%d problem(s)\n", failed)
		return errClientsFailed
	}
	return nil
}
