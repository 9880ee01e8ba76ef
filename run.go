package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"token-rotator/config"
	"token-rotator/discovery"
	"token-rotator/metrics"
	"token-rotator/oauth"
	"token-rotator/rotate"
	"token-rotator/vault"
)

// options are the command-line flags.
type options struct {
	config    string
	once      bool
	clients   stringList
	dryRun    bool
	force     bool
	logLevel  string
	logFormat string
	shard     string
	metrics   string
	push      string
	version   bool
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	var o options
	fs := flagSet(&o, stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return &o, nil
}

// flagSet is the rotating command's flags, bound to o.
func flagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("token-rotator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: token-rotator [flags]            rotate: a daemon on the schedule, or one pass with --once
       token-rotator status [flags]     every client and connection's state (--output json)
       token-rotator validate [flags]   config, Vault login, secrets and policy; no token request
       token-rotator authorize [flags]  onboard an operator: PKCE authorization URL and code exchange
       token-rotator SUBCOMMAND -h      a subcommand's flags

flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.config, "config", "config.yaml", "configuration file")
	fs.BoolVar(&o.once, "once", false, "run one pass and exit: 0 all clients fine, 1 a client failed, 2 config or start-up error")
	fs.Var(&o.clients, "client", "rotate only this client, or this connection: client/connection (repeatable; overrides --shard)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "say what would be rotated; no token requests, no writes")
	fs.BoolVar(&o.force, "force", false, "rotate every client whether due or not")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "auto", "auto (text on a terminal, JSON otherwise), text or json")
	fs.StringVar(&o.shard, "shard", "", "rotate one share of the clients and connections: INDEX/COUNT; INDEX defaults to JOB_COMPLETION_INDEX (Kubernetes Indexed Job)")
	fs.StringVar(&o.metrics, "metrics-address", ":9090", "daemon mode: serve /metrics, /healthz and /readyz here (empty: off)")
	fs.StringVar(&o.push, "pushgateway", "", "--once: push the run's metrics to this Prometheus Pushgateway URL")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

// subcommands are the commands named by the first argument; without one, the job rotates.
var subcommands = []string{"status", "validate", "authorize"}

// lateSubcommand finds a subcommand written after flags, as in `--config x.yaml validate`, and
// returns its index, or -1. A flag's value is no subcommand (`--client status` names a client):
// the rotating command's flags say which take a value; a flag of a subcommand's own, unknown here,
// is taken to be boolean, and only its value's being a subcommand's name would mislead.
func lateSubcommand(args []string) int {
	fs := flagSet(&options{}, io.Discard)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return -1
		}
		if name, ok := strings.CutPrefix(a, "-"); ok && a != "-" {
			name = strings.TrimPrefix(name, "-")
			if f := fs.Lookup(name); f != nil && !strings.Contains(name, "=") && !isBool(f) {
				i++ // the flag's value
			}
			continue
		}
		if slices.Contains(subcommands, a) {
			return i
		}
	}
	return -1
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// secretFlags are the flags whose values an error never repeats.
var secretFlags = []string{"code", "code-verifier"}

// commandLine is the command line that runs args[i], a subcommand, with the other arguments:
// the fix for `token-rotator --config x.yaml validate`. Values of secretFlags are left out.
func commandLine(args []string, i int) string {
	out := []string{"token-rotator", args[i]}
	rest := append(slices.Clone(args[:i]), args[i+1:]...)
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case !strings.HasPrefix(a, "-") || !slices.Contains(secretFlags, name):
			out = append(out, shellQuote(a))
		case hasValue:
			out = append(out, a[:len(a)-len(value)]+"...")
		default:
			out = append(out, a)
			if j+1 < len(rest) {
				out = append(out, "...")
				j++
			}
		}
	}
	return strings.Join(out, " ")
}

// shellQuote quotes s for a POSIX shell when it holds anything but plain characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// run is the whole program behind main: it returns nil, errClientsFailed, or a start-up error.
// Its first argument may name a subcommand: status, validate or authorize.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "help":
			args = []string{"-h"}
		case "status":
			return runStatus(ctx, args[1:], stdout, stderr)
		case "validate":
			return runValidate(ctx, args[1:], stdout, stderr)
		case "authorize":
			return runAuthorize(ctx, args[1:], os.Stdin, stdout, stderr)
		}
	}
	if i := lateSubcommand(args); i >= 0 {
		return fmt.Errorf("%q is a subcommand and comes first: %s", args[i], commandLine(args, i))
	}
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if o.version {
		fmt.Fprintln(stdout, "token-rotator", version)
		return nil
	}
	shard, err := parseShard(o.shard, os.Getenv("JOB_COMPLETION_INDEX"))
	if err != nil {
		return err
	}
	job, err := setUp(ctx, o.config, o.clients, o.logLevel, o.logFormat, stderr)
	if errors.Is(err, errInterrupted) {
		return nil // SIGTERM before anything started: nothing done, nothing failed
	} else if err != nil {
		return err
	}
	rot := job.rotator
	rot.Force, rot.DryRun, rot.Shard = o.force, o.dryRun, shard
	switch {
	case shard.Count > 1 && len(o.clients) > 0 && strings.HasPrefix(o.shard, "/"):
		// An Indexed Job: every pod has the same --client, so each named target runs only in the
		// pod whose shard owns it, not in all of them at once.
		rot.OnlyInShard = true
		job.logger.Info("--client with --shard /N: each named client or connection runs in the pod whose shard owns it", "shard", shard.String(), "client", o.clients.String())
	case shard.Count > 1 && len(o.clients) > 0:
		job.logger.Info("--client overrides --shard: the named clients and connections run whatever their shard", "shard", shard.String(), "client", o.clients.String())
	}
	m := metrics.New()
	if !(o.once || o.dryRun) || o.push != "" { // a --once run without a Pushgateway has no one to tell
		rot.Observer = m
	}
	if o.once || o.dryRun {
		failed := rotate.AnyFailed(rot.Pass(ctx))
		if o.push != "" && !o.dryRun {
			// Bounded, and a shutdown does not wait for it: the rotations are done.
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := m.Push(pctx, o.push, shard)
			cancel()
			if err != nil {
				job.logger.Warn("could not push metrics", "pushgateway", o.push, "error", err.Error())
			}
		}
		if failed {
			return errClientsFailed
		}
		return nil
	}
	if o.metrics != "" {
		addr, err := m.Serve(ctx, o.metrics)
		if err != nil {
			return fmt.Errorf("--metrics-address: %w", err)
		}
		job.logger.Info("serving /metrics, /healthz and /readyz", "address", addr.String())
	}
	return daemon(ctx, rot.Pass, job.cfg, job.logger)
}

// job is what every command sets up: the logger, the configuration, the store and a Rotator.
type job struct {
	logger  *slog.Logger
	cfg     *config.Config
	store   *vault.Store
	rotator *rotate.Rotator
}

// errInterrupted is a set-up cut short by a signal.
var errInterrupted = errors.New("interrupted before start")

// setUp loads the config, logs in to Vault and builds the Rotator every command works with.
func setUp(ctx context.Context, configPath string, names []string, logLevel, logFormat string, stderr io.Writer) (*job, error) {
	logger, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(configPath)
	if err != nil {
		return nil, err
	}
	clients, err := selectClients(cfg, names)
	if err != nil {
		return nil, err
	}
	var store *vault.Store
	err = rotate.UntilVault(ctx, logger, "login", func() (err error) {
		store, err = vault.Open(ctx, cfg.Vault)
		var te *vault.TLSError
		if errors.As(err, &te) {
			return &startError{err} // a certificate Vault or the job refused: waiting will not help
		}
		return err
	})
	var se *startError
	if errors.As(err, &se) {
		err = se.err
	}
	if err != nil {
		if ctx.Err() != nil {
			logger.Info("interrupted before the first pass")
			return nil, errInterrupted
		}
		return nil, err
	}
	if store.KVVersion() == 1 {
		logger.Warn("KV version 1 at the mount: writes are not check-and-set", "mount", cfg.Vault.KVMount)
	}
	if err := checkConnections(ctx, cfg, store, logger, names); err != nil {
		if ctx.Err() != nil {
			logger.Info("interrupted before the first pass")
			return nil, errInterrupted
		}
		return nil, err
	}
	j := &job{logger: logger, cfg: cfg, store: store, rotator: &rotate.Rotator{
		Store:          store,
		Tokens:         &oauth.Client{UserAgent: "token-rotator/" + version},
		Discovery:      &discovery.Client{UserAgent: "token-rotator/" + version},
		Clients:        clients,
		RenewBefore:    cfg.RenewBefore,
		RefreshWarning: cfg.RefreshWarning,
		Spread:         spread(cfg.RenewBefore),
		Concurrency:    cfg.Concurrency,
		RateLimit:      cfg.RateLimit,
		PassDeadline:   cfg.PassDeadline,
		Only:           names,
		Logger:         logger,
	}}
	if tuneRotator != nil {
		tuneRotator(j.rotator)
	}
	return j, nil
}

// startError is an error of the job's start that is not worth waiting out, although
// vault.Unavailable would take it for Vault being away.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }

// tuneRotator, set by tests only, adjusts the Rotator setUp builds: a test whose Vault tokens
// live seconds shortens the margin they must cover (rotate.Rotator.TokenMargin).
var tuneRotator func(*rotate.Rotator)

// selectClients returns the clients that --client names, or all of them. A name is a client's,
// or a connection's as logs and status name it: client/connection.
func selectClients(cfg *config.Config, names []string) ([]config.Client, error) {
	if len(names) == 0 {
		return cfg.Clients, nil
	}
	var out []config.Client
	seen := map[string]bool{}
	for _, n := range names {
		client, connection, isConnection := strings.Cut(n, "/")
		c := cfg.Client(client)
		switch {
		case c == nil && isConnection:
			return nil, fmt.Errorf("--client %s: no client %s in %s", n, client, cfg.File)
		case c == nil:
			return nil, fmt.Errorf("--client %s: no such client in %s", n, cfg.File)
		case isConnection && c.Connections == "":
			return nil, fmt.Errorf("--client %s: client %s has no connections (no connections prefix in %s): name it --client %s", n, client, cfg.File, client)
		case isConnection && connection == "":
			return nil, fmt.Errorf("--client %s: name a connection after the slash, or the client alone: --client %s", n, client)
		}
		if !seen[client] {
			seen[client] = true
			out = append(out, *c)
		}
	}
	return out, nil
}

// checkConnections makes sure every connection --client names is under its client's prefix, so
// that a mistyped name is an error rather than a pass with nothing to do.
func checkConnections(ctx context.Context, cfg *config.Config, store *vault.Store, logger *slog.Logger, names []string) error {
	listed := map[string]map[string]bool{}
	for _, n := range names {
		client, connection, isConnection := strings.Cut(n, "/")
		if !isConnection {
			continue
		}
		c := cfg.Client(client)
		if listed[client] == nil {
			var paths []string
			err := rotate.UntilVault(ctx, logger, "list connections", func() (err error) {
				paths, err = store.List(ctx, c.Connections)
				return err
			})
			if err != nil {
				return fmt.Errorf("--client %s: list connections: %w", n, err)
			}
			listed[client] = map[string]bool{}
			for _, p := range paths {
				listed[client][p] = true
			}
		}
		if !listed[client][connection] {
			return fmt.Errorf("--client %s: client %s has no connection %s under %s; `token-rotator status --client %s` lists its connections", n, client, connection, c.Connections, client)
		}
	}
	return nil
}

// parseShard reads --shard INDEX/COUNT. An empty INDEX ("/4") is taken from index, the
// JOB_COMPLETION_INDEX that Kubernetes gives each pod of an Indexed Job.
func parseShard(flag, index string) (rotate.Shard, error) {
	if flag == "" {
		return rotate.Shard{}, nil
	}
	i, n, ok := strings.Cut(flag, "/")
	if i == "" {
		i = index
	}
	var s rotate.Shard
	var err1, err2 error
	s.Index, err1 = strconv.Atoi(i)
	s.Count, err2 = strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || s.Count < 1 || s.Index < 0 || s.Index >= s.Count {
		return s, fmt.Errorf("--shard %q: want INDEX/COUNT with 0 <= INDEX < COUNT (INDEX may come from JOB_COMPLETION_INDEX=%q)", flag, index)
	}
	return s, nil
}

// spread is how far early a token may be rotated: up to renew_before more, but never so far that a
// token just issued would be due again before half of what is left after renew_before has passed.
func spread(renewBefore time.Duration) time.Duration {
	return min(renewBefore, (config.AccessTokenLifetime-renewBefore)/2)
}
