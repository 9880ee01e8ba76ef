package apptoken

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"token-rotator/config"
	"token-rotator/vault"
)

// Defaults of the Options tuning fields.
const (
	// DefaultReadBefore: with less than a minute left, the job (which replaces a token 30 minutes
	// before it expires by default) is late; ask Vault, at most once per MinReadInterval.
	DefaultReadBefore = time.Minute
	// DefaultMaxAge: one read a minute per Source sees a new version soon, at a cost Vault does
	// not notice.
	DefaultMaxAge = time.Minute
	// DefaultWaitForNew covers the few milliseconds between Doorkeeper ending a token and the
	// job's write of the next one, and a Vault write slowed by the job's own retries.
	DefaultWaitForNew = 10 * time.Second
	// DefaultMinReadInterval bounds the reads of a Source whose token is stale, refused or
	// missing to one a second, while still picking up the job's next write within a second.
	DefaultMinReadInterval = time.Second
)

// While waiting for a token other than a refused one, Vault is read again after 50 ms, then after
// twice as long each time, up to every second.
const (
	pollFirst = 50 * time.Millisecond
	pollMax   = time.Second
)

// Options say which secret holds the token and when to read it again. Zero values mean the
// defaults.
type Options struct {
	// Mount is the KV mount; default "secret".
	Mount string
	// Path is the output path under the mount, e.g. "apps/acme"; required. New and Open refuse
	// a Path starting with the mount ("secret/apps/acme", the form token-rotator's logs print)
	// and, on KV v2, a Path starting with "data/" or "metadata/" or a Mount ending in "/data" or
	// "/metadata": the KV v2 API's segments, which the Source adds itself.
	Path string
	// KVVersion is the mount's KV version, 1 or 2; 0 detects it from the mount, one read of
	// sys/internal/ui/mounts/<Mount>, which Vault allows a token with any capability under the
	// mount (as the vault CLI and token-rotator do). Given, it is not checked until a read finds
	// no secret or no data; then that one read of the mount tells whether KVVersion is wrong, and
	// the error says so.
	KVVersion int

	// ReadBefore: a token with less than this left before its expires_at is read again (at most
	// once per MinReadInterval) until Vault holds a newer one. Default 1 minute.
	ReadBefore time.Duration
	// MaxAge: a token read longer ago than this is read again, to see a new version. A secret
	// without expires_at is used until MaxAge, then read again. Default 1 minute.
	MaxAge time.Duration
	// WaitForNew: after a 401, how long Transport reads Vault again (after 50 ms, doubling to
	// every second) for a token other than the one refused, before it returns the 401. The
	// request's context bounds it too. Default 10 seconds.
	WaitForNew time.Duration
	// MinReadInterval: the least time between two reads of the secret, except while waiting
	// after a 401; it wins over a shorter MaxAge. After reads Vault failed while the cached token
	// still works, the pause doubles from it up to MaxAge. Default 1 second, or MaxAge if shorter.
	MinReadInterval time.Duration

	// Login and Address are for Open: how it logs in to Vault (token-rotator's vault.auth
	// settings: method token, kubernetes or approle); nil means method token, the token from
	// VAULT_TOKEN. Address empty means VAULT_ADDR. New ignores both.
	Login   *Login
	Address string
}

// Login is how Open logs in to Vault, the way token-rotator does (its vault.auth settings):
// Method "token" (TokenFile, or VAULT_TOKEN), "kubernetes" (Role; Mount default "kubernetes";
// JWTFile default /var/run/secrets/kubernetes.io/serviceaccount/token) or "approle" (RoleID,
// SecretIDFile; Mount default "approle").
type Login = config.Auth

// Login methods.
const (
	MethodToken      = config.AuthToken
	MethodKubernetes = config.AuthKubernetes
	MethodAppRole    = config.AuthAppRole
)

// Source reads the access token from the output secret and caches it. It is an
// oauth2.TokenSource; Transport and Client add the 401 rule. Safe for concurrent use; use
// it through its pointer (a copy, which vet's copylocks check reports, may print what it holds).
type Source struct {
	store *vault.Store
	path  string // mount/path, for errors
	opts  Options

	reads singleflight.Group // one Vault read at a time, shared by every caller
	busy  atomic.Bool        // a read is in flight

	mu       sync.Mutex
	cur      *cached   // the last token read; nil before the first
	lastErr  error     // the last read's error; nil after a good read
	nextRead time.Time // no read before this, except while waiting after a 401
	failures int       // reads failed in a row (Vault's fault, not the secret's)
	gen      uint64    // reads ended so far
	wait     *wait     // the wait for a token other than a refused one, while it lasts
	// refused is a token the API refused that Vault still held after WaitForNew: a 401 for it
	// costs at most one read per MinReadInterval and no wait; the cache serves it as any other.
	// A pointer, so that printing a copy of a Source shows an address, never the token.
	refused *string

	kvChecked bool  // Options.KVVersion, given, was compared with the mount's
	kvErr     error // and this is what they differ by; nil when they agree
}

// cached is one token as read. Never print it.
type cached struct {
	token   string
	expiry  time.Time // zero: unknown
	version int       // KV v2 version; 0 on KV v1
	readAt  time.Time
}

// New returns a Source reading opts.Path with client, which must be logged in. When Vault
// refuses client's token the Source cannot log in again: keeping it valid (renewing it, logging
// in again) is the caller's job. Use Open for a Source that logs in itself. With KVVersion 0 New
// asks Vault for the mount's version (one request); it reads no secret.
func New(client *api.Client, opts Options) (*Source, error) {
	if client == nil {
		return nil, errors.New("apptoken: no Vault client (use Open to log in from the environment)")
	}
	return newSource(context.Background(), client, config.Auth{}, opts)
}

// Open logs in to Vault as opts.Login says, with a client made from the environment (VAULT_ADDR,
// VAULT_CACERT and the rest, as the vault CLI reads them; opts.Address overrides VAULT_ADDR),
// and returns a Source that keeps that login working: when Vault refuses its token (expired or
// revoked), it logs in again and repeats the read, as token-rotator does. Vault answers 403 to
// such a token and to a read its policy does not allow alike, so a 403 is followed by a lookup of
// the token (auth/token/lookup-self, in Vault's default policy): when Vault accepts the token, the
// read's error matches ErrPermissionDenied and no login is made. With method token and no
// TokenFile it cannot log in again: a VAULT_TOKEN that expires ends the Source's reads.
func Open(ctx context.Context, opts Options) (*Source, error) {
	auth := config.Auth{Method: config.AuthToken}
	if opts.Login != nil {
		auth = *opts.Login
	}
	c, err := vault.Connect(ctx, config.Vault{Address: opts.Address, Auth: auth})
	if err != nil {
		return nil, fmt.Errorf("apptoken: %w", err)
	}
	return newSource(ctx, c, auth.WithDefaults(), opts)
}

func newSource(ctx context.Context, c *api.Client, auth config.Auth, opts Options) (*Source, error) {
	opts.Mount = strings.Trim(opts.Mount, "/")
	opts.Path = strings.Trim(opts.Path, "/")
	if opts.Mount == "" {
		opts.Mount = "secret"
	}
	if opts.Path == "" {
		return nil, errors.New("apptoken: Options.Path is required (the output path under the mount, e.g. apps/acme)")
	}
	for _, d := range []*time.Duration{&opts.ReadBefore, &opts.MaxAge, &opts.WaitForNew, &opts.MinReadInterval} {
		if *d < 0 {
			return nil, errors.New("apptoken: Options durations must not be negative")
		}
	}
	opts.ReadBefore = orDefault(opts.ReadBefore, DefaultReadBefore)
	opts.MaxAge = orDefault(opts.MaxAge, DefaultMaxAge)
	opts.WaitForNew = orDefault(opts.WaitForNew, DefaultWaitForNew)
	opts.MinReadInterval = orDefault(opts.MinReadInterval, min(DefaultMinReadInterval, opts.MaxAge))
	if rest, ok := strings.CutPrefix(opts.Path, opts.Mount+"/"); ok {
		return nil, fmt.Errorf("apptoken: Options.Path %q starts with the mount %q, and Path is under the mount: set Path %q", opts.Path, opts.Mount, rest)
	}
	store, err := vault.NewStore(ctx, c, auth, opts.Mount, opts.KVVersion)
	if err != nil {
		return nil, fmt.Errorf("apptoken: %w", err)
	}
	if store.KVVersion() == 2 {
		if err := kv2Paths(opts.Mount, opts.Path); err != nil {
			return nil, err
		}
	}
	return &Source{store: store, path: opts.Mount + "/" + opts.Path, opts: opts}, nil
}

// kv2Paths refuses a KV v2 mount or path holding the data/ or metadata/ segment of the KV v2
// API, which the Source adds itself: the secret read would not be the one meant.
func kv2Paths(mount, path string) error {
	for _, seg := range []string{"data", "metadata"} {
		if rest, ok := strings.CutPrefix(path, seg+"/"); ok {
			return fmt.Errorf("apptoken: Options.Path %q starts with %q, which the KV v2 API adds itself: set Path %q", path, seg+"/", rest)
		}
		if m, ok := strings.CutSuffix(mount, "/"+seg); ok {
			return fmt.Errorf("apptoken: Options.Mount %q ends in %q, which the KV v2 API adds itself: set Mount %q", mount, "/"+seg, m)
		}
	}
	return nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// String names the secret, never the token.
func (s *Source) String() string { return "apptoken.Source(" + s.path + ")" }

// GoString is String, so that %#v prints no token either.
func (s *Source) GoString() string { return s.String() }

// Format writes String for every fmt verb and flag: with no Format, verbs such as %d or %t print
// the struct's fields, the cached token among them.
func (s *Source) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// KVVersion is the KV version of the mount read: 1 or 2.
func (s *Source) KVVersion() int { return s.store.KVVersion() }

// Token is TokenContext with context.Background().
func (s *Source) Token() (*oauth2.Token, error) { return s.TokenContext(context.Background()) }

// TokenContext returns the access token: AccessToken, TokenType "Bearer", Expiry from the
// secret's expires_at (zero when the secret has none). It answers from the cache while the token
// was read less than MaxAge ago and has more than ReadBefore left. Past that, while the cached
// token has not expired (and the API has not refused it), it still answers at once and reads
// Vault in the background, one read at a time and no more often than MinReadInterval; the next
// call gets what that read found. With no such token it waits for a read: if that read fails
// for Vault's reasons (unreachable, 5xx, permission denied) and the cached token has not
// expired, it returns the cached token. While the Transport waits for a token other than the
// cached one, which the API refused, it waits for the outcome too. ctx bounds its waits (a read
// goes on for other callers); an error from ctx names the path.
//
// Errors: an *Error matching ErrNotFound (no secret, or its latest version deleted: ErrDeleted
// too), ErrNoAccessToken, ErrBadExpiry or ErrExpired; an error matching ErrPermissionDenied when
// the Vault token's policy does not allow the read; otherwise Vault's error, naming the path. No
// error contains a token.
func (s *Source) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	c, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: c.token, TokenType: "Bearer", Expiry: c.expiry}, nil
}

// current is the token to send now: the cached one, or what a read of Vault gives.
func (s *Source) current(ctx context.Context) (*cached, error) {
	s.mu.Lock()
	c := s.cur
	if w := s.wait; c != nil && w != nil && w.refused == c.token {
		// The API refused the cached token and the search for the next one is under way: a
		// request sent with it now would be refused too.
		s.mu.Unlock()
		select {
		case <-w.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("apptoken: read %s: waiting for a token other than the one the API refused: %w", s.path, ctx.Err())
		}
		if w.found != nil {
			return w.found, nil
		}
		s.mu.Lock()
		c = s.cur
	}
	now := time.Now()
	if c != nil && s.fresh(c, now) {
		s.mu.Unlock()
		return c, nil
	}
	usable := c != nil && c.usable(now)
	if usable && !s.wasRefused(c.token) {
		// Due for a read, but still working: give it now and read in the background.
		if !now.Before(s.nextRead) {
			s.nextRead = now.Add(s.opts.MinReadInterval) // readVault sets it again when done
			s.startRead(context.Background(), s.gen)
		}
		s.mu.Unlock()
		return c, nil
	}
	if now.Before(s.nextRead) && !s.busy.Load() {
		// Too soon to ask Vault again: answer from what we have.
		switch {
		case usable: // refused, and Vault held nothing newer when last read
			s.mu.Unlock()
			return c, nil
		case s.lastErr != nil:
			err := s.lastErr
			s.mu.Unlock()
			return nil, err
		case c != nil:
			s.mu.Unlock()
			return nil, s.expired(c)
		}
	}
	gen := s.gen
	s.mu.Unlock()
	got, err := s.read(ctx, gen)
	if err == nil {
		return got, nil
	}
	var te *Error
	if errors.As(err, &te) {
		return nil, err // the secret's state, not Vault's failure: say so
	}
	if usable && c.usable(time.Now()) {
		return c, nil // Vault blinked; the token we hold still works
	}
	return nil, err
}

// fresh reports whether c may be used without asking Vault. The caller holds s.mu. A token the
// API refused while Vault kept holding it (s.refused) may be fresh: the refusal was not a
// rotation's, or the job is late; either way only a 401 tells, and the 401 path reads Vault.
func (s *Source) fresh(c *cached, now time.Time) bool {
	return now.Sub(c.readAt) < s.opts.MaxAge && (c.expiry.IsZero() || c.expiry.Sub(now) > s.opts.ReadBefore)
}

// usable reports whether c has not expired (or has no known expiry).
func (c *cached) usable(now time.Time) bool { return c.expiry.IsZero() || now.Before(c.expiry) }

// read reads the secret, joining the read in flight if there is one, and waits for it. seen is
// s.gen when the caller last looked at the cache: a read ended since then answers it. ctx bounds
// the wait; the read outlives ctx, so that the other callers waiting for it get its answer.
func (s *Source) read(ctx context.Context, seen uint64) (*cached, error) {
	select {
	case r := <-s.startRead(ctx, seen):
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*cached), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("apptoken: read %s: %w", s.path, ctx.Err())
	}
}

// startRead starts a read of the secret, or joins the one in flight, and returns where its
// result will come. A read started after another ended since the caller looked (s.gen is no
// longer seen) reads nothing and gives that one's result.
func (s *Source) startRead(ctx context.Context, seen uint64) <-chan singleflight.Result {
	return s.reads.DoChan("read", func() (any, error) {
		s.mu.Lock()
		if s.gen != seen {
			c, err := s.cur, s.lastErr
			s.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return c, nil
		}
		s.mu.Unlock()
		s.busy.Store(true)
		defer s.busy.Store(false)
		return s.readVault(context.WithoutCancel(ctx))
	})
}

// readVault makes one read of the secret and records what it learnt.
func (s *Source) readVault(ctx context.Context) (*cached, error) {
	sec, err := s.store.Read(ctx, s.opts.Path)
	now := time.Now()
	var c *cached
	if err == nil {
		c, err = s.parse(sec, now)
	} else {
		err = s.readError(err)
	}
	var te *Error
	if errors.As(err, &te) && (te.Err == ErrNotFound || te.Err == ErrNoAccessToken) && s.opts.KVVersion != 0 {
		if m := s.kvMismatch(ctx); m != nil {
			err = m
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	switch {
	case err == nil:
		s.cur, s.lastErr, s.failures = c, nil, 0
		s.nextRead = now.Add(s.opts.MinReadInterval)
	case errors.As(err, &te): // the secret says there is no token to use: forget the one we held
		s.cur, s.lastErr, s.failures = nil, err, 0
		s.nextRead = now.Add(s.opts.MinReadInterval)
	default: // Vault's failure
		s.lastErr = err
		s.failures++
		s.nextRead = now.Add(s.opts.MinReadInterval)
		if s.cur != nil && s.cur.usable(now) {
			// The token held still works: spare Vault, doubling the pause up to MaxAge.
			pause := s.opts.MinReadInterval << min(s.failures-1, 16)
			s.nextRead = now.Add(min(pause, max(s.opts.MaxAge, s.opts.MinReadInterval)))
		}
	}
	return c, err
}

// kvMismatch tells whether Options.KVVersion, given rather than detected, is the mount's: a read
// with the other version's API finds no secret (KV v2's on KV v1) or no data (KV v1's on KV v2).
// It asks Vault once, after the first such read, and returns the error to give instead, or nil.
func (s *Source) kvMismatch(ctx context.Context) error {
	s.mu.Lock()
	checked, mismatch := s.kvChecked, s.kvErr
	s.mu.Unlock()
	if checked {
		return mismatch
	}
	v, err := s.store.DetectKVVersion(ctx)
	if err != nil {
		return nil // cannot tell: the secret's error stands; ask again after the next one
	}
	if v != s.opts.KVVersion {
		mismatch = fmt.Errorf("apptoken: read %s: Options.KVVersion is %d, but mount %s is KV version %d: set KVVersion %d, or 0 to detect it",
			s.path, s.opts.KVVersion, s.opts.Mount, v, v)
	}
	s.mu.Lock()
	s.kvChecked, s.kvErr = true, mismatch
	s.mu.Unlock()
	return mismatch
}

// parse takes the token out of a secret as read. Errors name the path and the key, never a value.
func (s *Source) parse(sec *vault.Secret, now time.Time) (*cached, error) {
	v, ok := sec.Data["access_token"]
	if !ok || v == nil || v == "" {
		return nil, &Error{Path: s.path, Version: sec.Version, Err: ErrNoAccessToken}
	}
	tok, ok := v.(string)
	if !ok {
		return nil, &Error{Path: s.path, Version: sec.Version, Err: ErrNoAccessToken, detail: fmt.Sprintf("access_token is a %s, not a string", jsonKind(v))}
	}
	c := &cached{token: tok, version: sec.Version, readAt: now}
	if e, present := sec.Data["expires_at"]; present && e != nil { // absent: unknown, used until MaxAge
		str, ok := e.(string)
		if !ok {
			return nil, &Error{Path: s.path, Version: sec.Version, Err: ErrBadExpiry, detail: "it is a " + jsonKind(e) + ", not a string"}
		}
		var err error
		if c.expiry, err = time.Parse(time.RFC3339, str); err != nil {
			return nil, &Error{Path: s.path, Version: sec.Version, Err: ErrBadExpiry}
		}
	}
	if !c.usable(now) {
		return nil, s.expired(c)
	}
	return c, nil
}

func (s *Source) expired(c *cached) error {
	return &Error{Path: s.path, Version: c.version, ExpiresAt: c.expiry, Err: ErrExpired}
}

// readError turns the store's error into this package's: the secret's absence as an *Error,
// Vault's failures as they are (they name the path already).
func (s *Source) readError(err error) error {
	var de *vault.DeletedError
	switch {
	case errors.As(err, &de):
		return &Error{Path: s.path, Version: de.Version, Err: ErrDeleted}
	case errors.Is(err, vault.ErrNotFound):
		return &Error{Path: s.path, Err: ErrNotFound}
	}
	return fmt.Errorf("apptoken: %w", err)
}

func jsonKind(v any) string {
	switch v.(type) {
	case bool:
		return "boolean"
	case map[string]any:
		return "map"
	case []any:
		return "list"
	}
	return "number"
}

// wasRefused reports whether token is the one remembered as refused past a whole wait. s.mu held.
func (s *Source) wasRefused(token string) bool { return s.refused != nil && *s.refused == token }
