package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
)

// EnsureToken makes sure the Vault token will still be valid min from now, so that a rotation
// started now can store what it is granted. A token without expiry (ttl 0) is left alone. Otherwise
// a renewable token is renewed; if it is not renewable, renewal leaves it short of min, or Vault no
// longer accepts it, the store logs in again (for the token method: token_file is read again, the
// way Vault Agent's sink is meant to be used). Errors never contain the token.
//
// What it learns of the token's expiry is remembered, so a call while the token has long to live
// asks Vault nothing: it is cheap enough to call before every client.
func (s *Store) EnsureToken(ctx context.Context, min time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.tokenExpiry.Sub(now) >= min {
		return nil
	}
	self, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	if err == nil && self != nil {
		ttl, _ := self.TokenTTL()
		if ttl == 0 {
			s.tokenExpiry = now.AddDate(100, 0, 0) // a token that never expires
			return nil
		}
		s.tokenExpiry = now.Add(ttl)
		if ttl >= min {
			return nil
		}
		if ok, _ := self.TokenIsRenewable(); ok {
			r, err := s.client.Auth().Token().RenewSelfWithContext(ctx, int(min.Seconds())+1)
			if err == nil && r != nil && r.Auth != nil {
				s.tokenExpiry = now.Add(time.Duration(r.Auth.LeaseDuration) * time.Second)
				if s.tokenExpiry.Sub(now) >= min {
					return nil
				}
			}
		}
	} else if !isAuthError(err) {
		return fmt.Errorf("vault token lookup: %w", cleanError(err))
	}
	if err := s.relogin(ctx, err != nil); err != nil {
		return err
	}
	if s.auth.Method == config.AuthToken && time.Until(s.tokenExpiry) < min {
		// The token file still holds a token too short for a rotation (nothing refreshed it).
		return fmt.Errorf("the Vault token in token_file expires within %v and cannot be renewed", min)
	}
	return nil
}

// relogin logs in again with the configured method. The caller holds s.mu. invalid says whether
// Vault refused the current token outright.
func (s *Store) relogin(ctx context.Context, invalid bool) error {
	if s.auth.Method == "" {
		return errors.New("vault token is no longer valid or expires soon, and the store was given a client without a way to log in")
	}
	if s.auth.Method == config.AuthToken && s.auth.TokenFile == "" {
		if invalid {
			return errors.New("vault token is no longer valid and VAULT_TOKEN cannot be renewed: use token_file or a login method")
		}
		return errors.New("vault token expires soon and cannot be renewed further")
	}
	s.tokenExpiry = time.Time{}
	if err := login(ctx, s.client, s.auth); err != nil {
		return err
	}
	if self, err := s.client.Auth().Token().LookupSelfWithContext(ctx); err == nil && self != nil {
		if ttl, _ := self.TokenTTL(); ttl > 0 {
			s.tokenExpiry = time.Now().Add(ttl)
		} else {
			s.tokenExpiry = time.Now().AddDate(100, 0, 0)
		}
	}
	return nil
}

// withLogin runs op, and once more after logging in again when Vault refused the token: a token
// that expired mid-pass must not cost a refresh token. Vault answers 403 both for a token it no
// longer accepts and for one whose policy does not allow op, so a 403 is followed by a lookup of
// the token (auth/token/lookup-self, which Vault's default policy allows): when Vault accepts
// that, op's refusal is the policy's, and it is returned as a *deniedError with no login. A token
// that may not look itself up costs a login on each 403; a refusal of the token that login gave
// (kubernetes, approle) is the policy's too.
func (s *Store) withLogin(ctx context.Context, op func() error) error {
	used := s.client.Token()
	err := op()
	if isAuthError(err) && s.client.Token() != used {
		// Another worker logged in while op was refused: the refusal was of the token that
		// login replaced, so op goes again with the new one before any lookup.
		err = op()
	}
	if !isAuthError(err) {
		return err
	}
	if _, lerr := s.client.Auth().Token().LookupSelfWithContext(ctx); lerr == nil {
		return &deniedError{err: err}
	}
	s.mu.Lock()
	lerr := s.relogin(ctx, true)
	s.mu.Unlock()
	if lerr != nil {
		return err
	}
	err = op()
	if isAuthError(err) && s.auth.Method != config.AuthToken {
		// Refused again with the token a login has just given: the policy's doing (the token
		// could not look itself up: a role with token_no_default_policy).
		return &deniedError{err: err}
	}
	return err
}

// isAuthError reports whether Vault refused the token itself (expired, revoked, unknown).
func isAuthError(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized)
}

// deniedError is Vault's refusal of a request that the token, which Vault still accepts, may not
// make: its policy's doing. It matches ErrPermissionDenied.
type deniedError struct{ err error }

func (e *deniedError) Error() string   { return cleanError(e.err).Error() }
func (e *deniedError) Unwrap() error   { return e.err }
func (e *deniedError) Is(t error) bool { return t == ErrPermissionDenied }
