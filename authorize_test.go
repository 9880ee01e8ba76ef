package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"token-rotator/internal/testenv"
	"token-rotator/rotate"
)

// approveAt plays the operator's browser against the token endpoint s: it reads the authorization
// URL the command prints, hands it to the test on shown, calls before (if not nil), has s issue a
// code for the URL's PKCE challenge, and answers with the redirect URL.
func approveAt(t *testing.T, s *testenv.Stora, prompt *io.PipeReader, answer *io.PipeWriter, clientID, redirectURI string, before func()) <-chan string {
	shown := make(chan string, 1)
	go func() {
		defer answer.Close()
		defer close(shown)
		sc := bufio.NewScanner(prompt)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if !strings.HasPrefix(line, "http") {
				continue
			}
			shown <- line
			u, err := url.Parse(line)
			if err != nil {
				t.Error(err)
				return
			}
			if before != nil {
				before()
			}
			q := u.Query()
			code := s.IssueCode(clientID, redirectURI, "public.contact:read", q.Get("code_challenge"))
			go io.Copy(io.Discard, prompt) // the command goes on printing while it waits for the answer
			io.WriteString(answer, redirectURI+"?code="+code+"&state="+q.Get("state")+"\n")
			return
		}
	}()
	return shown
}

// authorizeAs runs `token-rotator authorize args...` in-process with an operator answering from s,
// and returns its exit code, what it printed and the authorization URL it printed.
func authorizeAs(t *testing.T, s *testenv.Stora, clientID, redirectURI string, before func(), args ...string) (int, string, string) {
	promptR, promptW := io.Pipe()
	answerR, answerW := io.Pipe()
	shown := approveAt(t, s, promptR, answerW, clientID, redirectURI, before)
	var out testenv.SyncBuffer
	err := runAuthorize(context.Background(), append(args, "--redirect-uri", redirectURI), answerR, io.MultiWriter(promptW, &out), &out)
	promptW.Close()
	code := exitCode(err, &out)
	return code, out.String(), <-shown
}

// TestAuthorizeAtTheClientsOwnEndpoint: a client with a token endpoint of its own sends its
// operator to the authorize endpoint beside it, not to the one beside the config's token_url
// (whose server would not know the client); its own authorize_url wins over both. The code is
// then exchanged at its own token endpoint.
func TestAuthorizeAtTheClientsOwnEndpoint(t *testing.T) {
	e := newEnv(t)
	own := testenv.StartStora(t) // the config's token_url is e.stora's
	id, secret := own.AddClient()
	e.put("stora/sandbox", map[string]any{"client_id": id, "client_secret": secret})
	const redirect = "https://partner.example/callback"
	for _, tc := range []struct{ name, extra, want string }{
		{"beside its token_url", "", own.BaseURL + "/oauth2/authorize?"},
		{"its own authorize_url", "    authorize_url: " + own.BaseURL + "/sso/authorize\n", own.BaseURL + "/sso/authorize?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config("  - name: sandbox\n    grant: authorization_code\n    secret: stora/sandbox\n    token_url: " + own.TokenURL + "\n" + tc.extra)
			code, out, shown := authorizeAs(t, own, id, redirect, nil, "--config", cfg, "--client", "sandbox")
			if !strings.HasPrefix(shown, tc.want) {
				t.Errorf("authorization URL %s, want one starting %s", shown, tc.want)
			}
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			if rt := str(e.get("stora/sandbox"), "refresh_token"); !own.RefreshTokenValid(rt) {
				t.Errorf("no refresh token from the client's own endpoint stored")
			}
			if n := len(e.stora.Requests()); n != 0 {
				t.Errorf("the config's token_url got %d requests; the client has its own", n)
			}
			assertNoSecrets(t, out, secret)
		})
	}
}

// TestAuthorizeWhileAPassHoldsTheClaim: another process's pass holding the claim on the
// connection's secret keeps authorize from exchanging a code there. Found before the approval,
// nothing is asked or stored; found after (the pass claimed it while the operator approved), the
// code stays stored and the next pass after that one exchanges it. Either way the command says
// what happened, by whom until when, and what to do, with exit 1; nothing was spent.
func TestAuthorizeWhileAPassHoldsTheClaim(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret})
	rt := e.stora.IssueRefreshToken(id, "public.contact:read")
	const conn = "stora/partner/connections/operator-1"
	e.put(conn, map[string]any{"refresh_token": rt})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: stora/partner\n    connections: stora/partner/connections\n")
	const redirect = "https://partner.example/callback"
	until := time.Now().Add(10 * time.Minute).UTC().Truncate(time.Second)
	claim := func(v any) { // as another process's pass claims and releases: in the secret's data
		if _, err := e.vault.Client.KVv2("secret").Patch(context.Background(), conn, map[string]any{"rotation_claim": v}); err != nil {
			t.Errorf("claim %v: %v", v, err) // also from the operator's goroutine: no Fatal
		}
	}
	held, _ := json.Marshal(map[string]any{"holder": "rotator-7f9c/1/a1b2c3", "target": "partner/operator-1", "expires": until})
	wantHeld := "(claimed by rotator-7f9c/1/a1b2c3 until " + until.Format(time.RFC3339) + ")"
	args := []string{"--config", cfg, "--client", "partner", "--connection", "operator-1"}

	t.Run("before the approval", func(t *testing.T) {
		claim(string(held))
		version := e.get(conn).VersionMetadata.Version
		code, out, shown := authorizeAs(t, e.stora, id, redirect, nil, args...)
		want := "partner/operator-1: a pass is rotating it right now " + wantHeld +
			", so no approval was asked for and nothing was stored: run authorize again in a minute"
		if code != 1 || !strings.Contains(out, want) || shown != "" {
			t.Errorf("exit %d, URL %q, printed:\n%s\nwant exit 1, no URL, and %q", code, shown, out, want)
		}
		if v := e.get(conn).VersionMetadata.Version; v != version {
			t.Errorf("the secret went from version %d to %d", version, v)
		}
		if n := len(e.stora.Requests()); n != 0 {
			t.Errorf("%d token requests", n)
		}
		claim(nil)
	})

	t.Run("while the operator approves", func(t *testing.T) {
		code, out, shown := authorizeAs(t, e.stora, id, redirect, func() { claim(string(held)) }, args...)
		want := "partner/operator-1: a pass claimed it first and is rotating it right now " + wantHeld +
			": the code is stored in " + conn + " but was not exchanged. The next pass exchanges it if it comes within the code's 10 minutes; or run authorize again in a minute"
		if code != 1 || !strings.Contains(out, want) || shown == "" {
			t.Errorf("exit %d, URL %q, printed:\n%s\nwant exit 1 and %q", code, shown, out, want)
		}
		if s := e.get(conn); str(s, "code") == "" || str(s, "refresh_token") != rt || !e.stora.RefreshTokenValid(rt) {
			t.Errorf("code stored %v, refresh token kept and live %v", str(s, "code") != "", str(s, "refresh_token") == rt && e.stora.RefreshTokenValid(rt))
		}
		if n := len(e.stora.Requests()); n != 0 {
			t.Errorf("%d token requests", n)
		}
		assertNoSecrets(t, out, secret, rt, str(e.get(conn), "code"))

		claim(nil) // that pass ends; the next one exchanges the stored code
		if code, out := e.run("--config", cfg, "--once"); code != 0 {
			t.Fatalf("the next pass: exit %d:\n%s", code, out)
		}
		if s := e.get(conn); s.Data["code"] != nil || str(s, "refresh_token") == rt || !e.stora.RefreshTokenValid(str(s, "refresh_token")) {
			t.Errorf("the next pass did not exchange the stored code")
		}
	})
}

// TestNotAuthorizedSaysWhy: every outcome of authorize's pass other than rotated prints a line
// saying why (a result without an error once printed nothing and exited 1).
func TestNotAuthorizedSaysWhy(t *testing.T) {
	for _, o := range []rotate.Outcome{rotate.RotatedElsewhere, rotate.Deleted, rotate.Skipped, rotate.NotDue} {
		if msg := notAuthorized(rotate.Result{Client: "partner/op-1", Outcome: o}, "stora/partner/connections/op-1"); msg == "" {
			t.Errorf("%s: no message", o)
		}
	}
	if msg := notAuthorized(rotate.Result{Outcome: rotate.Failed, Err: errors.New("invalid_grant")}, "p"); msg != "invalid_grant" {
		t.Errorf("failed: %q, want the error", msg)
	}
}

// TestAuthorizePublicClientCodeNeedsItsVerifier: a public client's code given without the PKCE
// verifier its authorization used can never be exchanged, so authorize refuses it before storing
// anything, and says which flag is missing.
func TestAuthorizePublicClientCodeNeedsItsVerifier(t *testing.T) {
	e := newEnv(t)
	e.put("stora/public", map[string]any{"client_id": "app"})
	cfg := e.config("  - name: public\n    grant: authorization_code\n    secret: stora/public\n    token_endpoint_auth_method: none\n")
	var out testenv.SyncBuffer
	err := runAuthorize(context.Background(), []string{"--config", cfg, "--client", "public", "--code", "the-code", "--redirect-uri", "https://p.example/cb"}, strings.NewReader(""), &out, &out)
	if code := exitCode(err, &out); code == 0 || !strings.Contains(err.Error(), "give --code-verifier") {
		t.Errorf("exit %d, error %v; want a refusal naming --code-verifier", code, err)
	}
	if got := e.get("stora/public"); got.VersionMetadata.Version != 1 || str(got, "code") != "" {
		t.Errorf("Vault's secret is at version %d after the refusal; want it as it was", got.VersionMetadata.Version)
	}
	if n := len(e.stora.Requests()); n != 0 {
		t.Errorf("the token endpoint saw %d requests", n)
	}
	assertNoSecrets(t, out.String()+err.Error(), "the-code")
}
