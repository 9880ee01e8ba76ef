// Package rotate is the rotation job's domain: when an access token is due (due.go), which grant
// renews it (grant.go), the order in which the results go back to Vault (writeback.go), and the
// pass over every client (pass.go).
package rotate

import (
	"context"
	"log/slog"
	"time"

	"token-rotator/config"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// Store is what a rotation needs of the secret store; *vault.Store satisfies it.
type Store interface {
	Read(ctx context.Context, path string) (*vault.Secret, error)
	// Write replaces the secret's data, check-and-set on version where the store supports it.
	Write(ctx context.Context, path string, data map[string]any, version int) (int, error)
}

// TokenSource requests a token from a token endpoint; *oauth.Client satisfies it.
type TokenSource interface {
	Token(ctx context.Context, tokenURL string, r oauth.Request) (*oauth.Token, error)
}

var (
	_ Store       = (*vault.Store)(nil)
	_ TokenSource = (*oauth.Client)(nil)
)

// Rotator runs rotation passes over a set of clients.
type Rotator struct {
	Store   Store
	Tokens  TokenSource
	Clients []config.Client
	// RenewBefore: rotate when less than this is left of the access token's life.
	RenewBefore time.Duration
	// Force rotates every client whether due or not.
	Force bool
	// DryRun reads Vault and says what it would do, without token requests or writes.
	DryRun bool
	// WriteTimeout bounds the write-back after a successful grant. The write-back runs on a
	// context that the pass's cancellation does not reach, so a shutdown mid-rotation still
	// stores what the server issued. Zero means 1 minute.
	WriteTimeout time.Duration
	// Logger gets one line per client per pass; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
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
