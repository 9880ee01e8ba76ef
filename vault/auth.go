package vault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"token-rotator/config"
)

// login authenticates c with the configured method. For the token method the token comes from
// TokenFile, or else from VAULT_TOKEN (already on c). Errors never contain the token.
func login(ctx context.Context, c *api.Client, a config.Auth) error {
	var method api.AuthMethod
	switch a.Method {
	case config.AuthToken:
		if a.TokenFile != "" {
			b, err := os.ReadFile(a.TokenFile)
			if err != nil {
				return fmt.Errorf("vault token_file: %w", err)
			}
			c.SetToken(strings.TrimSpace(string(b)))
		}
		if c.Token() == "" {
			return errors.New("vault auth: no token (set VAULT_TOKEN or a token file)")
		}
		return nil
	case config.AuthKubernetes:
		k, err := kubernetes.NewKubernetesAuth(a.Role,
			kubernetes.WithMountPath(a.Mount), kubernetes.WithServiceAccountTokenPath(a.JWTFile))
		if err != nil {
			return fmt.Errorf("vault kubernetes auth: %w", err)
		}
		method = k
	case config.AuthAppRole:
		r, err := approle.NewAppRoleAuth(a.RoleID, &approle.SecretID{FromFile: a.SecretIDFile},
			approle.WithMountPath(a.Mount))
		if err != nil {
			return fmt.Errorf("vault approle auth: %w", err)
		}
		method = r
	default:
		return fmt.Errorf("vault auth: unknown method %q", a.Method)
	}
	s, err := c.Auth().Login(ctx, method)
	if err != nil {
		return fmt.Errorf("vault %s login: %w", a.Method, cleanError(err))
	}
	if s == nil || s.Auth == nil {
		return fmt.Errorf("vault %s login: no token in the response", a.Method)
	}
	return nil
}
