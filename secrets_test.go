package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"token-rotator/internal/storafake"
)

// TestSecretsNeverLeave runs the job down every path (success, each grant, server errors that echo
// what they were sent, bad secrets, dry runs) at debug level, with distinctive markers for client
// secrets, codes and verifiers, and the access and refresh tokens the server issues. No marker may
// appear in what the job prints, in its errors, or in Vault metadata. The markers are short and
// hold characters no token alphabet has, so only removing the exact values sent keeps them out:
// the token-shaped redaction alone would not.
func TestSecretsNeverLeave(t *testing.T) {
	e := newEnv(t)
	var markers []string
	var mu sync.Mutex
	mark := func(s string) string { mu.Lock(); defer mu.Unlock(); markers = append(markers, s); return s }
	e.stora.Issued = func(_, rt string) { mark(rt) }

	// A server that, for one client, echoes the request body back in its errors.
	echoID := "echo-client"
	e.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), echoID) {
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			return false
		}
		switch {
		case strings.Contains(string(body), "authorization_code"):
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(200)
			fmt.Fprintf(w, "<html>maintenance; you sent %s</html>", body)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_request", "error_description": "cannot parse " + string(body)})
		}
		return true
	}

	var clients strings.Builder
	add := func(name, grant, scope string, data map[string]any) {
		e.put("leak/"+name, data)
		fmt.Fprintf(&clients, "  - {name: %s, grant: %s, secret: leak/%s, output: leak-out/%s%s}\n", name, grant, name, name, scope)
	}
	id, secret := "cc-client", mark("MK!cc-secret")
	e.stora.AddClientWith(id, secret)
	add("cc", "client_credentials", ", scope: public.contact:read", map[string]any{"client_id": id, "client_secret": secret})

	pid, psecret := "pkce-client", mark("MK!pkce#sec")
	e.stora.AddClientWith(pid, psecret)
	verifier := mark("MARKERverifier-" + strings.Repeat("v", 30))
	code := mark("MK!code/val")
	e.stora.AddCode(pid, code, "https://p.test/cb", "public.contact:read", storafake.S256(verifier))
	add("pkce", "authorization_code", "", map[string]any{"client_id": pid, "client_secret": psecret, "code": code, "redirect_uri": "https://p.test/cb", "code_verifier": verifier})

	add("wrong", "client_credentials", ", scope: public.contact:read", map[string]any{"client_id": id, "client_secret": mark("MK!wrong:1")})

	rid, rsecret := "revoked-client", mark("MK!revoked")
	e.stora.AddClientWith(rid, rsecret)
	rt := mark(e.stora.IssueRefreshToken(rid, "public.contact:read"))
	e.stora.RevokeRefreshToken(rt)
	add("revoked", "authorization_code", "", map[string]any{"client_id": rid, "client_secret": rsecret, "refresh_token": rt})

	esecret := mark("MK!echo(s)")
	e.stora.AddClientWith(echoID, esecret)
	add("echo400", "client_credentials", ", scope: public.contact:read", map[string]any{"client_id": echoID, "client_secret": esecret})
	ecode := mark("MK!echo@code")
	add("echo200", "authorization_code", "", map[string]any{"client_id": echoID, "client_secret": esecret, "code": ecode, "redirect_uri": "https://p.test/cb"})

	add("typed", "authorization_code", "", map[string]any{"client_id": 7, "client_secret": mark("MK!typed*s"), "refresh_token": mark("MK!typed*rt")})

	cfg := e.config(clients.String())
	var out strings.Builder
	for _, args := range [][]string{
		{"--dry-run", "--log-level", "debug"},
		{"--once", "--log-level", "debug", "--log-format", "json"},
		{"--once", "--log-level", "debug", "--log-format", "text", "--force"},
	} {
		code, o := e.run(append([]string{"--config", cfg}, args...)...)
		if code == 2 {
			t.Fatalf("%v: exit 2:\n%s", args, o)
		}
		out.WriteString(o)
	}
	for _, name := range []string{"cc", "pkce"} { // the access tokens issued
		if at := str(e.get("leak-out/"+name), "access_token"); at != "" {
			mark(at)
		} else {
			t.Errorf("%s was not rotated: the test would prove nothing for it", name)
		}
	}
	var meta strings.Builder
	for _, name := range []string{"cc", "pkce", "wrong", "revoked", "echo400", "echo200", "typed"} {
		m, err := e.vault.Client.KVv2("secret").GetMetadata(context.Background(), "leak/"+name)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&meta, m.CustomMetadata)
	}
	if !strings.Contains(out.String(), "cannot parse") || !strings.Contains(out.String(), "maintenance") {
		t.Errorf("the echoing server's errors are not in the output; the test would prove nothing:\n%s", out.String())
	}
	for _, m := range markers {
		if strings.Contains(out.String(), m) {
			t.Errorf("output contains %.10s…", m)
		}
		if strings.Contains(meta.String(), m) {
			t.Errorf("Vault metadata contains %.10s…", m)
		}
	}
	t.Logf("%d markers checked against %d bytes of output and %d of metadata", len(markers), out.Len(), meta.Len())
}
