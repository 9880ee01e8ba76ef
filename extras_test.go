package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestAudienceAndResourceReachTheTokenEndpoint runs the job with a top-level audience and
// resource and a client with its own: the fake token endpoint records what each request carried.
// A JSON body sends several resources as an array; a form body repeats resource=.
func TestAudienceAndResourceReachTheTokenEndpoint(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("x/partner", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": e.stora.IssueRefreshToken(id, "public.contact:read")})
	e.put("x/acme", map[string]any{"client_id": id, "client_secret": secret})
	cfg := writeConfig(t, "token_url: "+e.stora.TokenURL+"\naudience: https://api.test\nresource: https://api.test/v1\nclients:\n"+
		"  - {name: partner, grant: authorization_code, secret: x/partner, resource: [https://a.test/, 'urn:example:b']}\n"+
		"  - {name: acme, grant: client_credentials, scope: public.contact:read, secret: x/acme, output: x/acme-token, token_request_encoding: form, audience: acme-api}\n")
	if code, out := e.run("--config", cfg, "--once", "--log-format", "json"); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	seen := map[string]map[string][]string{}
	for _, r := range e.stora.Requests() {
		seen[r.GrantType] = r.Params
	}
	if p := seen["refresh_token"]; !slices.Equal(p["audience"], []string{"https://api.test"}) || !slices.Equal(p["resource[]"], []string{"https://a.test/", "urn:example:b"}) {
		t.Errorf("refresh request: audience %q, resource array %q", p["audience"], p["resource[]"])
	}
	if p := seen["client_credentials"]; !slices.Equal(p["audience"], []string{"acme-api"}) || !slices.Equal(p["resource"], []string{"https://api.test/v1"}) {
		t.Errorf("client_credentials request: audience %q, resource %q", p["audience"], p["resource"])
	}
}

// TestRefreshTokenNotRotated: a server that does not rotate refresh tokens (RFC 6749 §6) answers
// with the same refresh token, or with none. Two rotations in a row both succeed, Vault keeps the
// refresh token, and the job says the endpoint kept it.
func TestRefreshTokenNotRotated(t *testing.T) {
	for _, omit := range []bool{false, true} {
		t.Run(fmt.Sprintf("omitted=%v", omit), func(t *testing.T) {
			e := newEnv(t)
			e.stora.KeepRefreshToken, e.stora.OmitRefreshToken = !omit, omit
			id, secret := e.stora.AddClient()
			rt := e.stora.IssueRefreshToken(id, "public.contact:read")
			e.put("x/partner", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": rt})
			cfg := e.config("  - {name: partner, grant: authorization_code, secret: x/partner, output: x/partner-token}\n")
			for pass := 1; pass <= 2; pass++ {
				code, out := e.run("--config", cfg, "--once", "--force", "--log-format", "json")
				if code != 0 || !strings.Contains(out, `"outcome":"rotated"`) ||
					!strings.Contains(out, `"note":"the token endpoint kept the refresh token (it does not rotate refresh tokens)"`) {
					t.Fatalf("pass %d: exit %d, want 0, rotated, and the note:\n%s", pass, code, out)
				}
				assertNoSecrets(t, out, rt, secret)
				if got := str(e.get("x/partner"), "refresh_token"); got != rt {
					t.Errorf("pass %d: Vault holds another refresh token", pass)
				}
				if st := e.tokenInfo(str(e.get("x/partner-token"), "access_token")); st != 200 {
					t.Errorf("pass %d: stored access token answered %d", pass, st)
				}
			}
			if n := len(e.stora.Requests()); n != 2 {
				t.Errorf("%d token requests, want 2", n)
			}
		})
	}
}

// TestIDTokenAndUnknownMembersNeverStoredOrLogged: the token endpoint adds an id_token (a JWT)
// and a member no RFC defines, holding a secret in an alphabet the token-shaped redaction does not
// catch, to every answer: successes, an invalid_grant, and a 503 that is no error object. After
// the rotations at debug level, neither is in any Vault secret (data or custom metadata) nor in
// what the job printed.
func TestIDTokenAndUnknownMembersNeverStoredOrLogged(t *testing.T) {
	e := newEnv(t)
	const idToken = "eyJhbGciOiJSUzI1NiIsImtpZCI6Ik1LIn0.eyJzdWIiOiJvcGVyYXRvci0xIiwiYXVkIjoiY2lkIn0.U0lHTkFUVVJFLWlkLXRva2VuLW1hcmtlcg"
	const odd = "MK! vendor session (do not log)"
	e.stora.Extra = map[string]any{"id_token": idToken, "x_vendor_session": odd}
	id, secret := e.stora.AddClient()
	e.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.RawQuery, "unavailable") {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		fmt.Fprintf(w, `{"message":"maintenance","id_token":%q,"x_vendor_session":%q}`, idToken, odd)
		return true
	}
	e.put("x/partner", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": e.stora.IssueRefreshToken(id, "public.contact:read")})
	e.put("x/acme", map[string]any{"client_id": id, "client_secret": secret})
	revoked := e.stora.IssueRefreshToken(id, "public.contact:read")
	e.stora.RevokeRefreshToken(revoked)
	e.put("x/revoked", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": revoked})
	e.put("x/down", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": e.stora.IssueRefreshToken(id, "public.contact:read")})
	cfg := e.config("  - {name: partner, grant: authorization_code, secret: x/partner, output: x/partner-token}\n" +
		"  - {name: acme, grant: client_credentials, scope: public.contact:read, secret: x/acme, output: x/acme-token}\n" +
		"  - {name: revoked, grant: authorization_code, secret: x/revoked}\n" +
		"  - {name: down, grant: authorization_code, secret: x/down, token_url: '" + e.stora.TokenURL + "?unavailable'}\n")
	var out strings.Builder
	for _, format := range []string{"json", "text"} {
		code, o := e.run("--config", cfg, "--once", "--force", "--log-level", "debug", "--log-format", format)
		if code != 1 {
			t.Fatalf("exit %d, want 1 (revoked and down fail):\n%s", code, o)
		}
		out.WriteString(o)
	}
	if !strings.Contains(out.String(), "maintenance") || !strings.Contains(out.String(), "invalid_grant") || !strings.Contains(out.String(), "token request failed; retrying") {
		t.Errorf("the error paths did not run, or are not in the output; the test would prove nothing:\n%s", out.String())
	}
	var vaultText strings.Builder
	for _, p := range []string{"x/partner", "x/partner-token", "x/acme", "x/acme-token", "x/revoked", "x/down"} {
		m, err := e.vault.Client.KVv2("secret").GetMetadata(context.Background(), p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		fmt.Fprintln(&vaultText, p, e.get(p).Data, m.CustomMetadata)
	}
	if !strings.Contains(vaultText.String(), "access_token") {
		t.Fatalf("nothing rotated; the test would prove nothing:\n%s", vaultText.String())
	}
	for _, piece := range []string{idToken, "U0lHTkFUVVJFLWlkLXRva2VuLW1hcmtlcg", "eyJzdWIiOiJvcGVyYXRvci0xIiwiYXVkIjoiY2lkIn0", "vendor session", "do not log"} {
		if strings.Contains(out.String(), piece) {
			t.Errorf("output contains %.20s…:\n%s", piece, out.String())
		}
		if strings.Contains(vaultText.String(), piece) {
			t.Errorf("Vault contains %.20s…", piece)
		}
	}
}
