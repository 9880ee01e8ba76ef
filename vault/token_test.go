package vault

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/internal/testenv"
)

// TestTokenInItsLastSecondIsNotTakenForOneThatNeverExpires: Vault gives a token's ttl in whole
// seconds, rounded down, so a token in its last second says ttl 0, as a token that never expires
// does. EnsureToken must refuse it (it cannot last a second more), not leave it alone for good.
func TestTokenInItsLastSecondIsNotTakenForOneThatNeverExpires(t *testing.T) {
	v := testenv.StartVault(t)
	renewable := false
	tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{TTL: "2s", Renewable: &renewable})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := v.CountingClient(t, tok.Auth.ClientToken)
	s, err := NewStore(context.Background(), c, config.Auth{Method: config.AuthToken}, "secret", 2)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		self, err := c.Auth().Token().LookupSelf()
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("the token never said ttl 0 before it expired (%v)", err)
		}
		if ttl, _ := self.TokenTTL(); ttl == 0 {
			break
		}
	}
	err = s.EnsureToken(context.Background(), time.Second)
	if err == nil || !strings.Contains(err.Error(), "is not renewable and expires in 0s") {
		t.Errorf("EnsureToken on a token in its last second: %v; want it refused as not renewable", err)
	}
}
