package vault

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
)

// unsetenv unsets k for the test and restores it after.
func unsetenv(t *testing.T, k string) {
	t.Setenv(k, "")
	os.Unsetenv(k)
}

// TestDefaultAddressNamedWhenUnreachable opens a store with neither VAULT_ADDR nor vault.address
// set, so that the vault client takes its default, https://127.0.0.1:8200, where nothing listens:
// the error says that address was the default, why, and what to set, and still counts as Vault
// unavailable (the job's start waits it out). With either set, or VAULT_AGENT_ADDR, it says
// nothing of a default.
func TestDefaultAddressNamedWhenUnreachable(t *testing.T) {
	if c, err := net.DialTimeout("tcp", "127.0.0.1:8200", time.Second); err == nil {
		c.Close()
		t.Skip("something listens on 127.0.0.1:8200, the vault client's default address")
	}
	t.Setenv("VAULT_TOKEN", "x")
	t.Setenv(api.EnvVaultMaxRetries, "0")
	unsetenv(t, api.EnvVaultAgentAddr)
	open := func(address string) error {
		_, err := Open(context.Background(), config.Vault{Address: address, KVMount: "secret", Auth: config.Auth{Method: config.AuthToken}})
		if err == nil {
			t.Fatal("Open succeeded with no Vault to reach")
		}
		return err
	}
	const hint = "(https://127.0.0.1:8200 is the vault client's default address, used because VAULT_ADDR is unset and the config has no vault.address: set either to your Vault's address)"

	unsetenv(t, api.EnvVaultAddress)
	err := open("")
	if !strings.Contains(err.Error(), "127.0.0.1:8200: connect: connection refused "+hint) {
		t.Errorf("VAULT_ADDR unset, no vault.address:\n  %v\nwant the refusal, then\n  %s", err, hint)
	}
	if !Unavailable(err) {
		t.Errorf("VAULT_ADDR unset: %v is not Unavailable: the start would not wait for Vault", err)
	}

	t.Setenv(api.EnvVaultAddress, "")
	if err := open(""); !strings.Contains(err.Error(), "used because VAULT_ADDR is empty and the config has no vault.address") {
		t.Errorf("VAULT_ADDR empty: %v", err)
	}

	for name, env := range map[string][2]string{
		"vault.address": {"", "http://127.0.0.1:1"},
		"VAULT_ADDR":    {"http://127.0.0.1:1", ""},
	} {
		t.Setenv(api.EnvVaultAddress, env[0])
		if err := open(env[1]); strings.Contains(err.Error(), "default") || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("%s set: %v, want the address it names and no word of a default", name, err)
		}
	}
	unsetenv(t, api.EnvVaultAddress)
	t.Setenv(api.EnvVaultAgentAddr, "http://127.0.0.1:1")
	if err := open(""); strings.Contains(err.Error(), "default") {
		t.Errorf("VAULT_AGENT_ADDR set: %v, want no word of a default", err)
	}
}

// TestDefaultAddressOnlyWhenUnreached: an error Vault answered, or one before any request, says
// nothing of the address, even at the default.
func TestDefaultAddressOnlyWhenUnreached(t *testing.T) {
	unsetenv(t, api.EnvVaultAddress)
	unsetenv(t, api.EnvVaultAgentAddr)
	for _, err := range []error{
		cleanError(&api.ResponseError{StatusCode: 503, Errors: []string{"Vault is sealed"}}),
		cleanError(&api.ResponseError{StatusCode: 403, Errors: []string{"permission denied"}}),
		errors.New("vault auth: no token (set VAULT_TOKEN or a token file)"),
	} {
		if got := atDefaultAddress(err, ""); got != err {
			t.Errorf("%v became %v", err, got)
		}
	}
}
