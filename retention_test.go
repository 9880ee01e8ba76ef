package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// TestValidateFailsOnRetentionThatCanDeleteARefreshToken: a credential secret whose versions
// Vault deletes after an hour makes `validate` exit 1, naming it on the client's line with the
// setting, its value, where it is set and the fix; `--once` warns and still succeeds.
func TestValidateFailsOnRetentionThatCanDeleteARefreshToken(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	if err := e.vault.Client.KVv2("secret").PutMetadata(context.Background(), "stora/partner", api.KVMetadataPutInput{DeleteVersionAfter: time.Hour}); err != nil {
		t.Fatal(err)
	}
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": e.stora.IssueRefreshToken(id, "")})
	e.put("stora/clean", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": e.stora.IssueRefreshToken(id, "")})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: stora/partner\n" +
		"  - name: clean\n    grant: authorization_code\n    secret: stora/clean\n")

	code, out := e.run("validate", "--config", cfg)
	wantLine := "partner: credential secret stora/partner: delete_version_after=1h0m0s set on the secret soft-deletes the latest version"
	if code != 1 || !strings.Contains(out, wantLine) || !strings.Contains(out, "(fix: vault kv metadata put -mount=secret -delete-version-after=0s stora/partner)") ||
		!strings.Contains(out, "\nclean: ok\n") || !strings.Contains(out, "1 problem(s)") {
		t.Errorf("validate: exit %d:\n%s\nwant exit 1 and %q", code, out, wantLine)
	}

	code, out = e.run("--config", cfg, "--once", "--log-format", "json")
	if code != 0 || strings.Count(out, `"msg":"KV retention can delete the refresh token"`) != 1 ||
		!strings.Contains(out, `"path":"stora/partner","setting":"delete_version_after","value":"1h0m0s","set_on":"the secret"`) {
		t.Errorf("--once: exit %d:\n%s\nwant exit 0 and one retention warning for stora/partner", code, out)
	}
}
