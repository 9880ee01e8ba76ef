// Package rotate is the rotation job's domain: when an access token is due (due.go), which grant
// renews it (grant.go), one target's rotation in named steps (rotation.go), the claim that lets
// only one process spend a refresh token (claim.go), the retries and failure taxonomy of the token
// request (retry.go), the time budget every wait after a spend fits (budget.go), the order and
// persistence of the write-back (writeback.go), a grant that failed (failed.go), a secret found
// deleted (gone.go), Vault's own retention settings (retention.go), the state recorded for
// operators (status.go), the pass over every target (pass.go, target.go), and what status and
// validate report (report.go). Every outcome names what Vault holds after it (result.go).
package rotate

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"token-rotator/config"
	"token-rotator/discovery"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// Store is what a rotation needs of the secret store; *vault.Store satisfies it.
type Store interface {
	Read(ctx context.Context, path string) (*vault.Secret, error)
	// Write replaces the secret's data, check-and-set on version where the store supports it;
	// it creates the secret, or recreates a deleted one.
	Write(ctx context.Context, path string, data map[string]any, version int) (int, error)
	// Update sets (or, for nil values, removes) keys of an existing secret, check-and-set on
	// version; it fails with vault.ErrNotFound, writing nothing, once the secret is deleted.
	Update(ctx context.Context, path string, changes map[string]any, version int) (int, error)
	// Writable says, without writing, whether the job may write the secret at path (and, with
	// status, record state in its metadata).
	Writable(ctx context.Context, path string, exists, status bool) error
	// SetStatus merges fields into the secret's metadata, out of the data apps read.
	SetStatus(ctx context.Context, path string, fields map[string]string) error
	// EnsureToken renews the store's own credentials, or logs in again, so they last min more.
	EnsureToken(ctx context.Context, min time.Duration) error
	// KVVersion is 2 when writes are check-and-set, 1 when not.
	KVVersion() int
	// List returns the paths of every secret below prefix, relative to it.
	List(ctx context.Context, prefix string) ([]string, error)
}

// Observer learns what a pass does, for metrics.
type Observer interface {
	// Rotation is one target's outcome; took is how long it ran.
	Rotation(res Result, took time.Duration)
	// TokenResponse is one token endpoint answer's HTTP status, 0 for none.
	TokenResponse(status int)
	// Targets is the targets a pass found, by name; complete is false when a connections prefix
	// could not be listed.
	Targets(names []string, complete bool)
	// PassDone is the end of a pass.
	PassDone()
}

// TokenSource requests a token from a token endpoint; *oauth.Client satisfies it.
type TokenSource interface {
	Token(ctx context.Context, tokenURL string, r oauth.Request) (*oauth.Token, error)
}

var (
	_ Store       = (*vault.Store)(nil)
	_ TokenSource = (*oauth.Client)(nil)
	_ Discoverer  = (*discovery.Client)(nil)
)

// Discoverer reads an issuer's authorization server metadata; *discovery.Client satisfies it.
type Discoverer interface {
	Discover(ctx context.Context, issuer string) (*discovery.Metadata, error)
}

// Rotator runs rotation passes over a set of clients. Zero durations take the defaults given.
type Rotator struct {
	Store  Store
	Tokens TokenSource
	// Discovery reads the metadata of clients' issuers, once per issuer per pass; nil means a
	// discovery.Client with its defaults.
	Discovery Discoverer
	Clients   []config.Client
	// RenewBefore: rotate when less than this is left of the access token's life.
	RenewBefore time.Duration
	// RefreshWarning: Report and Validate warn of a stored refresh token expiry less than this
	// away (refresh_token_warning); 0 warns of none.
	RefreshWarning time.Duration
	// Force rotates every client whether due or not.
	Force bool
	// DryRun reads Vault and says what it would do, without token requests or writes.
	DryRun bool
	// Spread rotates each token early by a stable share of this, so that tokens issued together
	// (a partner's operators onboarded in one go) are not all due at one instant again: a target
	// is due when less than RenewBefore + Spread·share is left. Earlier is always safe.
	Spread time.Duration
	// Concurrency is how many token requests are in flight at once; 0 means 1. Reading, claiming
	// and writing back for as many more targets goes on beside them.
	Concurrency int
	// RateLimit is the token endpoint's published limits; the job keeps under them per token URL
	// (golang.org/x/time/rate). Zero limits are off.
	RateLimit config.RateLimit
	// PassDeadline ends a pass: targets not started by then are skipped until the next pass.
	// Zero means none.
	PassDeadline time.Duration
	// Shard limits the pass to one share of the targets (Kubernetes Indexed Jobs).
	Shard Shard
	// Only, when not empty, limits the pass to the targets of these names: "client" (the client,
	// or all its connections) or "client/connection". It overrides Shard, unless OnlyInShard.
	Only []string
	// OnlyInShard keeps Shard's filter for the targets Only names: each runs only in the shard
	// that owns it. Set for an Indexed Job (--shard /N), whose pods all get the same --client: the
	// named target must not run in every pod at once.
	OnlyInShard bool
	// ProgressEvery is how often a long pass logs its progress; default 15 s.
	ProgressEvery time.Duration

	// GrantRetry is how long after its claim a rotation may go on sending token requests that
	// spend nothing yet: the waits for a request slot and the rate limit, and retries of what
	// failed transiently (network, timeout, 5xx, 429). Default DefaultGrantRetry; see budget.go.
	GrantRetry time.Duration
	// GrantBackoff is the first wait between token request attempts; it doubles, with jitter, up
	// to 30 s, and a server's Retry-After or RateLimit-Reset lengthens it. Default 500 ms.
	GrantBackoff time.Duration
	// SpentWait bounds the wait before the one retry of a request that may have spent a refresh
	// token, whatever the server's Retry-After; default MaxSpentWait, which budget.go counts on.
	SpentWait time.Duration
	// WriteDeadline bounds the write-back after a successful grant: it is retried with backoff,
	// logging in to Vault again as needed, until then. It runs on a context the pass's
	// cancellation does not reach, so a shutdown mid-rotation still stores what the server issued.
	// Default DefaultWriteDeadline: well inside the 2-hour life of the access token it stores.
	WriteDeadline time.Duration
	// VaultWait bounds how long a step before the token request waits out an unavailable Vault
	// (see vault.Unavailable); default DefaultVaultWait.
	VaultWait time.Duration
	// WriteBackoff is the first wait between write-back attempts; it doubles up to 10 s.
	// Default 200 ms.
	WriteBackoff time.Duration
	// ClaimTTL is how long a claim keeps other processes off a secret. It must outlast a
	// rotation (ClaimedFor), so that a claim only lapses when its holder died. Default
	// DefaultClaimTTL.
	ClaimTTL time.Duration
	// TokenMargin is how long the store's own Vault token must still be valid when a rotation
	// starts: EnsureToken renews it, or logs in again, to last that long, and a rotation it cannot
	// make last fails before anything is spent. Default DefaultTokenMargin, which covers the whole
	// rotation (budget.go); tests with tokens of seconds shorten it.
	TokenMargin time.Duration
	// Holder names this process in claims; default host/pid/random.
	Holder string

	// Observer, when set, is told each target's outcome and each token endpoint answer.
	Observer Observer
	// Logger gets one line per target per pass, progress and a summary; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	limitersMu sync.Mutex
	limiters   map[string]*rate.Limiter // by token URL

	sharedMu sync.Mutex
	shared   map[string]*sharedEntry // client credentials of connections, by path; reset each pass

	statusQueue chan statusWrite // metadata writes during a pass; nil outside one
	grantSlots  chan struct{}    // one per token request in flight; Concurrency of them
	waits       waiting          // what the pass's rotations wait for, for its progress line

	retention retentionWatch // KV settings that can delete a refresh token, warned once (retention.go)
}

// rateMargin is how far under the server's published limits the job keeps: the server counts
// by its own clock, and arrival times jitter.
const rateMargin = 0.97

// limiter returns the rate limiter of a token URL, or nil when the limit is off. It is a token
// bucket of one token refilled at 97% of the tighter of the per-second and per-minute limits: at
// most 1 + rate·T requests in any T seconds, which stays under both. With --shard INDEX/COUNT each
// shard keeps to 1/COUNT of it, so the shards together do.
func (r *Rotator) limiter(tokenURL string) *rate.Limiter {
	perSecond := r.RateLimit.PerSecond
	if pm := r.RateLimit.PerMinute / 60; pm > 0 && (perSecond <= 0 || pm < perSecond) {
		perSecond = pm
	}
	if perSecond <= 0 {
		return nil
	}
	if r.Shard.Count > 1 { // the shards run at once, each its own process: each keeps to its share
		perSecond /= float64(r.Shard.Count)
	}
	r.limitersMu.Lock()
	defer r.limitersMu.Unlock()
	if r.limiters == nil {
		r.limiters = map[string]*rate.Limiter{}
	}
	l := r.limiters[tokenURL]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(perSecond*rateMargin), 1)
		r.limiters[tokenURL] = l
	}
	return l
}

func (r *Rotator) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Rotator) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (r *Rotator) holder() string {
	if r.Holder == "" {
		host, _ := os.Hostname()
		r.Holder = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), randomID())
	}
	return r.Holder
}
