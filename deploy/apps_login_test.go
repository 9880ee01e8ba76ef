package deploy

import (
	"context"
	"strings"
	"testing"
	"time"

	"token-rotator/apptoken"
	"token-rotator/internal/testenv"
)

// docsAppLogin is the Kubernetes login docs/apps.md's Go snippet shows an app: setup.sh's apps role
// and the projected token for audience vault that deploy/vault-agent/deployment.yaml mounts.
const docsAppLogin = `Login: &apptoken.Login{Method: apptoken.MethodKubernetes, Role: "token-rotator-apps", JWTFile: "/var/run/secrets/vault/token"}`

// TestDocsAppLogin runs docs/apps.md's Kubernetes login for apps against a Vault set up by setup.sh:
// the default apps' service account (stora-client in default) with a token for audience vault
// reads apps/acme through package apptoken, and the same account's token for the API server's
// audience (the automounted one) is refused.
func TestDocsAppLogin(t *testing.T) {
	if !strings.Contains(testenv.DocSection(t, appsDoc, "Go apps: package apptoken"), docsAppLogin) {
		t.Fatalf("docs/apps.md's Go snippet no longer shows %s", docsAppLogin)
	}
	v := testenv.StartVault(t)
	k8s, kubeEnv := startKube(t)
	runSetup(t, v, kubeEnv...)
	ctx := context.Background()
	expires := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	if _, err := v.Client.KVv2("secret").Put(ctx, "apps/acme", map[string]any{
		"access_token": "app-token", "token_type": "Bearer", "expires_at": expires.Format(time.RFC3339)}); err != nil {
		t.Fatal(err)
	}
	open := func(audience string) (*apptoken.Source, error) {
		jwt := writeFile(t, "token", saToken(t, k8s, "default", "stora-client", audience))
		return apptoken.Open(ctx, apptoken.Options{Address: v.Addr, Path: "apps/acme",
			Login: &apptoken.Login{Method: apptoken.MethodKubernetes, Role: "token-rotator-apps", JWTFile: jwt}})
	}
	src, err := open("vault")
	if err != nil {
		t.Fatalf("docs/apps.md's login: %v", err)
	}
	tok, err := src.Token()
	if err != nil || tok.AccessToken != "app-token" || !tok.Expiry.Equal(expires) {
		t.Fatalf("docs/apps.md's login: got the stored token %v (%v); want it, expiring at %v", tok != nil && tok.AccessToken == "app-token" && tok.Expiry.Equal(expires), err, expires)
	}
	if _, err := open(""); err == nil || !strings.Contains(err.Error(), "audience") {
		t.Errorf("a token for the API server's audience: %v; want Vault's refusal naming the audience", err)
	}
}
