package apptoken

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"token-rotator/config"
	"token-rotator/internal/testenv"
	"token-rotator/oauth"
	"token-rotator/rotate"
	"token-rotator/vault"
)

// TestNoFailedRequestsWhileTheJobRotates, against the real Doorkeeper in both revocation modes:
// two app instances call Doorkeeper's protected endpoint without pause through the Transport
// while token-rotator's rotation (rotate.Rotator, the job's code) refreshes their
// authorization-code token 5 times. Instance "eager" reads Vault every 300 ms, so in the
// revoke-on-use mode its first use of each new token ends the one "lazy" (default MaxAge: 1
// minute) still holds. No request may fail.
func TestNoFailedRequestsWhileTheJobRotates(t *testing.T) {
	t.Parallel()
	for _, immediate := range []bool{true, false} {
		mode := map[bool]string{true: "revoked at once", false: "revoked on use"}[immediate]
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			v := testenv.StartVault(t)
			d := testenv.StartTokenServerWith(t, "doorkeeper", testenv.DoorkeeperOptions{RevokeImmediately: immediate})
			job := partnerRotation(t, v, d)
			infoURL := d.Base() + "/oauth2/token/info"

			type instance struct {
				name         string
				src          *Source
				vault        *testenv.Requests
				sent, failed atomic.Int64
				refused      atomic.Int64
			}
			var apps []*instance
			for name, maxAge := range map[string]time.Duration{"eager": 300 * time.Millisecond, "lazy": 0} {
				c, n := v.CountingClient(t, v.Token)
				c.SetMaxRetries(0)
				s, err := New(c, Options{Path: "apps/partner", MaxAge: maxAge})
				if err != nil {
					t.Fatal(err)
				}
				apps = append(apps, &instance{name: name, src: s, vault: n})
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for _, app := range apps {
				client := app.src.Client(&http.Client{Timeout: 30 * time.Second})
				client.Transport = app.src.Transport(testenv.Unauthorized{Base: http.DefaultTransport, N: &app.refused})
				for range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							app.sent.Add(1)
							resp, err := client.Get(infoURL)
							if err != nil {
								app.failed.Add(1)
								t.Errorf("%s: %v", app.name, err)
								continue
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if resp.StatusCode != http.StatusOK {
								app.failed.Add(1)
								t.Errorf("%s: HTTP %d", app.name, resp.StatusCode)
							}
						}
					}()
				}
			}
			for range 5 {
				time.Sleep(400 * time.Millisecond)
				job()
			}
			time.Sleep(400 * time.Millisecond)
			close(stop)
			wg.Wait()
			for _, app := range apps {
				t.Logf("doorkeeper, refresh tokens %s, 5 rotations: app %s sent %d requests, %d failed, %d refused and sent again, %d Vault reads",
					mode, app.name, app.sent.Load(), app.failed.Load(), app.refused.Load(), app.vault.KVReads("secret", "apps/partner"))
			}
		})
	}
}

// partnerRotation stores a partner's client and refresh token issued by server, runs a first
// rotation so that apps/partner holds an access token, and returns a function that runs one more
// forced rotation, as `token-rotator --once --force` does.
func partnerRotation(t *testing.T, v *testenv.Vault, server testenv.TokenServer) func() {
	t.Helper()
	id, secret := server.AddClient(t, "https://partner.example/callback", "")
	_, rt := server.IssueTokenPair(t, id, "public.contact:read")
	putKV(t, v.Client, "secret", 2, "stora/partner", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": rt})
	file := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(file, []byte(v.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := vault.Open(context.Background(), config.Vault{Address: v.Addr, KVMount: "secret", Auth: config.Auth{Method: config.AuthToken, TokenFile: file}})
	if err != nil {
		t.Fatal(err)
	}
	r := &rotate.Rotator{Store: store, Tokens: &oauth.Client{}, RenewBefore: 30 * time.Minute, Force: true,
		Clients: []config.Client{{Name: "partner", Grant: config.GrantAuthorizationCode, Secret: "stora/partner", Output: "apps/partner", TokenURL: server.Endpoint()}}}
	pass := func() {
		if res := r.Pass(context.Background())[0]; res.Outcome != rotate.Rotated {
			t.Fatalf("rotation: %s (%v)", res.Outcome, res.Err)
		}
	}
	pass()
	return pass
}
