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
func (s *Store) EnsureToken(ctx context.Context, min time.Duration) error {
	self, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	if err == nil && self != nil {
		ttl, _ := self.TokenTTL()
		if ttl == 0 || ttl >= min {
			return nil
		}
		if ok, _ := self.TokenIsRenewable(); ok {
			r, err := s.client.Auth().Token().RenewSelfWithContext(ctx, int(min.Seconds())+1)
			if err == nil && r != nil && r.Auth != nil && time.Duration(r.Auth.LeaseDuration)*time.Second >= min {
				return nil
			}
		}
	} else if !isAuthError(err) {
		return fmt.Errorf("vault token lookup: %w", cleanError(err))
	}
	if s.auth.Method == config.AuthToken && s.auth.TokenFile == "" {
		if err != nil {
			return errors.New("vault token is no longer valid and VAULT_TOKEN cannot be renewed: use token_file or a login method")
		}
		return fmt.Errorf("vault token expires within %v and cannot be renewed further", min)
	}
	return login(ctx, s.client, s.auth)
}

// isAuthError reports whether Vault refused the token itself (expired, revoked, unknown).
func isAuthError(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized)
}
