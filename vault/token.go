package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
)

// ReloginMargin is the most EnsureToken asks of a token the store can replace by logging in (a
// kubernetes or approle role): to last until a rotation's first write-back attempt. Past that, a write Vault
// refuses for the token's sake logs in again and goes on (withLogin), so a role whose tokens live
// less than a rotation may last costs one login per token life, not one per client.
const ReloginMargin = 3 * time.Minute

// canLogIn reports whether the store can replace its token by logging in: kubernetes or approle.
// A token_file is not counted: read again, it may hold the same token when nothing refreshed it,
// so its token must last the whole rotation, as VAULT_TOKEN's must.
func (s *Store) canLogIn() bool {
	return s.auth.Method != "" && s.auth.Method != config.AuthToken
}

// EnsureToken makes sure the Vault token will still be valid min from now (at most ReloginMargin
// when the store can log in again), so that a rotation started now can store what it is granted. A token that never expires (no expire_time, as a root
// token) is left alone. Otherwise a renewable token (a periodic one included) is renewed, asking
// for 2 × min; if it is not renewable (a batch token never is), renewal leaves it short of min,
// or Vault no longer accepts it, the store logs in again (for the token method: token_file is
// read again, the way Vault Agent's sink is meant to be used). A token from VAULT_TOKEN alone
// cannot be replaced: then the error says what kind of token it is (batch, not renewable,
// periodic with too short a period, or capped by its maximum TTL) and what to use instead.
// Errors never contain the token.
//
// What it learns of the token's expiry is remembered, so a call while the token has long to live
// asks Vault nothing: it is cheap enough to call before every client.
func (s *Store) EnsureToken(ctx context.Context, min time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.canLogIn() && min > ReloginMargin {
		min = ReloginMargin
	}
	now := time.Now()
	if s.tokenExpiry.Sub(now) >= min {
		return nil
	}
	self, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	var short error // why the current token cannot be made to last min
	if err == nil && self != nil {
		if self.Data["expire_time"] == nil {
			s.tokenExpiry = now.AddDate(100, 0, 0) // a token that never expires
			return nil
		}
		// Vault gives whole seconds, rounded down: a token in its last second says ttl 0.
		ttl, _ := self.TokenTTL()
		s.tokenExpiry = now.Add(ttl)
		if ttl >= min {
			return nil
		}
		renewable, _ := self.TokenIsRenewable()
		if renewable {
			r, err := s.client.Auth().Token().RenewSelfWithContext(ctx, int((2 * min).Seconds()))
			if err == nil && r != nil && r.Auth != nil {
				ttl = time.Duration(r.Auth.LeaseDuration) * time.Second
				s.tokenExpiry = now.Add(ttl)
				if ttl >= min {
					return nil
				}
			}
		}
		short = shortToken(self, renewable, ttl, min)
	} else if !isAuthError(err) {
		return fmt.Errorf("vault token lookup: %w", cleanError(err))
	}
	if s.auth.Method == config.AuthToken && s.auth.TokenFile == "" && short != nil {
		return fmt.Errorf("the Vault token from VAULT_TOKEN %w: use token_file (e.g. Vault Agent's sink), or a login method (kubernetes, approle)", short)
	}
	if err := s.relogin(ctx, err != nil); err != nil {
		return err
	}
	if s.auth.Method == config.AuthToken && time.Until(s.tokenExpiry) < min {
		// The token file still holds a token too short for a rotation (nothing refreshed it).
		return fmt.Errorf("the Vault token in token_file %s expires within %v and nothing replaced it: keep the file fresh (Vault Agent's sink), or use a login method (kubernetes, approle)", s.auth.TokenFile, min)
	}
	return nil
}

// shortToken says why a token that Vault accepts cannot be made to last min: its kind, from
// lookup-self's answer (type, renewable, period, explicit_max_ttl), and how long it has left.
func shortToken(self *api.Secret, renewable bool, ttl, min time.Duration) error {
	left := fmt.Sprintf("expires in %v, before a rotation started now could end (%v)", ttl, min)
	seconds := func(key string) time.Duration { // lookup-self gives whole seconds, as json.Number
		n, _ := self.Data[key].(json.Number)
		i, _ := n.Int64()
		return time.Duration(i) * time.Second
	}
	typ, _ := self.Data["type"].(string)
	switch {
	case typ == "batch":
		return fmt.Errorf("is a batch token, which cannot be renewed, and %s", left)
	case !renewable && ttl > 0: // at 0 s left Vault calls any token not renewable: the cause is elsewhere
		return fmt.Errorf("is not renewable and %s", left)
	case seconds("period") > 0:
		return fmt.Errorf("is periodic with a period of %v, shorter than a rotation may last (%v; give it a period at least that long)", seconds("period"), min)
	case seconds("explicit_max_ttl") > 0:
		return fmt.Errorf("is capped by its explicit_max_ttl (%v), past which Vault renews no token, and %s", seconds("explicit_max_ttl"), left)
	case !renewable:
		return fmt.Errorf("is not renewable and %s", left)
	}
	return fmt.Errorf("has reached the max TTL of its role or mount, past which Vault renews it no further, and %s", left)
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
		return errors.New("the Vault token from VAULT_TOKEN expires soon and cannot be renewed further: use token_file (e.g. Vault Agent's sink), or a login method (kubernetes, approle)")
	}
	s.tokenExpiry = time.Time{}
	if err := login(ctx, s.client, s.auth); err != nil {
		return err
	}
	if self, err := s.client.Auth().Token().LookupSelfWithContext(ctx); err == nil && self != nil {
		if ttl, _ := self.TokenTTL(); self.Data["expire_time"] != nil {
			s.tokenExpiry = time.Now().Add(ttl)
		} else {
			s.tokenExpiry = time.Now().AddDate(100, 0, 0) // a token that never expires
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
