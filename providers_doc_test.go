//go:build unix

package main

import (
	"strings"
	"testing"

	"token-rotator/internal/testenv"
)

// TestOtherProvidersExample runs README's generic-provider config, as printed, against the real
// oidc-provider: only the issuer is replaced by the test server's. The whole config loads, and its
// client_credentials client rotates through discovery, with Basic authentication and a form body
// (the audience it names is sent too, which oidc-provider ignores), into the output path it names.
func TestOtherProvidersExample(t *testing.T) {
	section := testenv.DocSection(t, "README.md", "Other providers")
	_, rest, ok := strings.Cut(section, "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 || !strings.Contains(example, "issuer: https://auth.example.com\n") {
		t.Fatalf("README's Other providers has no yaml example naming issuer https://auth.example.com")
	}
	p := testenv.StartOIDCProvider(t, testenv.OIDCProviderOptions{Scopes: []string{"orders:read"}})
	e := newEnv(t)
	id, secret := p.AddClientWith(t, testenv.OIDCClient{AuthMethod: "client_secret_basic", Scopes: "orders:read"})
	e.put("crm/client", map[string]any{"client_id": id, "client_secret": secret})
	cfg := writeConfig(t, strings.Replace(example, "https://auth.example.com", p.BaseURL, 1))

	// validate: the crm client is ok; partner, whose secret the test does not write, is the one problem
	code, out := e.run("validate", "--config", cfg)
	if !strings.Contains(out, "\ncrm: ok") || !strings.Contains(out, "\n1 problem(s)") || code != 1 {
		t.Errorf("validate exit %d; want crm ok and one problem (partner's absent secret):\n%s", code, out)
	}
	code, out = e.run("--config", cfg, "--once", "--client", "crm")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if st := p.TokenInfo(t, str(e.get("crm/token"), "access_token")); st != 200 {
		t.Errorf("oidc-provider answered %d to the access token in crm/token, want 200 (active)", st)
	}
	log := p.TokenRequestLog(t)
	if len(log) != 1 || log[0].Auth != "basic" || log[0].Status != 200 {
		t.Errorf("oidc-provider saw %+v, want one client_credentials request with Basic authentication", log)
	}
	// oidc-provider's access tokens here live 120 s, less than renew_before (30m): every pass
	// refreshes them, as README says.
	code, out2 := e.run("--config", cfg, "--once", "--client", "crm")
	if log := p.TokenRequestLog(t); code != 0 || len(log) != 2 {
		t.Errorf("a second pass: exit %d after %d token requests in all, want 0 after 2:\n%s", code, len(log), out2)
	}
	assertNoSecrets(t, out+out2, secret)
}
