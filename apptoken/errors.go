package apptoken

import (
	"errors"
	"time"

	"token-rotator/vault"
)

// The states of the output secret in which it gives no token to use. A Source returns them in an
// *Error naming the secret's path; match them with errors.Is.
var (
	// ErrNotFound: no secret at the path (token-rotator has not written it yet, or the path is
	// wrong), or its latest version is deleted or destroyed (then ErrDeleted matches too).
	ErrNotFound = errors.New("no secret at this path (has token-rotator written it yet?)")
	// ErrDeleted: the latest version of the KV v2 secret is deleted or destroyed.
	ErrDeleted = errors.New("the latest version of the secret is deleted or destroyed")
	// ErrNoAccessToken: the secret has no access_token key, an empty one, or one that is not a
	// string.
	ErrNoAccessToken = errors.New("the secret holds no access_token")
	// ErrBadExpiry: the secret's expires_at is not a string holding an RFC 3339 time, as
	// token-rotator writes it. The token is not used: its end is unknown and a Source holding it
	// would give it for as long as Vault cannot be read.
	ErrBadExpiry = errors.New("expires_at is not an RFC 3339 time: was the secret written by token-rotator?")
	// ErrExpired: the token in the secret expired (expires_at is past) and token-rotator has not
	// written the next one.
	ErrExpired = errors.New("the access token expired and was not yet replaced: is token-rotator running?")
)

// ErrPermissionDenied matches the error of a read that Vault refused although it accepts the
// Source's Vault token: the token's policy does not allow read on the output path. The error
// names the path to grant, e.g. "the Vault policy must allow read on secret/data/apps/acme". A
// Source made by Open does not log in again for it.
var ErrPermissionDenied = vault.ErrPermissionDenied

// Error is a secret that gives no token to use. Its text names the path (and for ErrExpired the
// expiry), never a value from the secret.
type Error struct {
	// Path is the secret's mount and path, e.g. "secret/apps/acme".
	Path string
	// Version is the KV v2 version read, when known; 0 on KV v1.
	Version int
	// ExpiresAt is the token's expires_at, for ErrExpired.
	ExpiresAt time.Time
	// Err is ErrNotFound, ErrDeleted, ErrNoAccessToken, ErrBadExpiry or ErrExpired.
	Err error

	detail string // what is wrong with a key, in words that hold no value
}

func (e *Error) Error() string {
	msg := "apptoken: " + e.Path + ": " + e.Err.Error()
	switch {
	case e.Err == ErrExpired:
		msg = "apptoken: " + e.Path + ": the access token expired at " + e.ExpiresAt.UTC().Format(time.RFC3339) +
			" and was not yet replaced: is token-rotator running?"
	case e.detail != "":
		msg += " (" + e.detail + ")"
	}
	return msg
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Is makes an ErrDeleted error match ErrNotFound too.
func (e *Error) Is(target error) bool { return target == ErrNotFound && e.Err == ErrDeleted }
