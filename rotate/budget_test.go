package rotate

import (
	"testing"
	"time"
)

// TestBudgetFitsTheClaim fails when a wait after a possible spend grows without the claim growing
// with it: a claim that lapses mid-rotation lets a second process spend the same refresh token.
func TestBudgetFitsTheClaim(t *testing.T) {
	if ClaimedFor >= DefaultClaimTTL {
		t.Errorf("a rotation may hold its claim %v, longer than the claim lives (%v)", ClaimedFor, DefaultClaimTTL)
	}
	if DefaultClaimTTL-ClaimedFor < RequestTimeout {
		t.Errorf("only %v between the longest rotation (%v) and the claim's end (%v): clocks skew more", DefaultClaimTTL-ClaimedFor, ClaimedFor, DefaultClaimTTL)
	}
	if AfterSpend != RequestTimeout+MaxSpentWait+RequestTimeout+DefaultWriteDeadline {
		t.Errorf("AfterSpend %v is not the sum of its parts", AfterSpend)
	}
}

// TestVaultTokenOutlastsTheRotation fails when a rotation may run past what the job's own Vault
// token was made to last at its start: a VAULT_TOKEN that expired between the token request and
// the write-back could not store the refresh token that request spent.
func TestVaultTokenOutlastsTheRotation(t *testing.T) {
	if DefaultTokenMargin < ClaimedFor+RequestTimeout {
		t.Errorf("the Vault token must last %v when a rotation starts, but the rotation may hold its claim %v, after reads before it", DefaultTokenMargin, ClaimedFor)
	}
	if DefaultTokenMargin != 15*time.Minute {
		t.Errorf("DefaultTokenMargin is %v; README.md's Running it says 15 minutes", DefaultTokenMargin)
	}
}

// TestBudgetFiguresInTheDocuments holds the figures README.md, docs/ and deploy/*.yaml quote.
func TestBudgetFiguresInTheDocuments(t *testing.T) {
	if ClaimedFor != 11*time.Minute+30*time.Second {
		t.Errorf("ClaimedFor is %v; docs/partners.md and deploy/cronjob.yaml say 11.5 minutes", ClaimedFor)
	}
	if ShutdownWait != 10*time.Minute+30*time.Second {
		t.Errorf("ShutdownWait is %v; docs/kubernetes.md and deploy/*.yaml say 10.5 minutes", ShutdownWait)
	}
	if DefaultClaimTTL != 15*time.Minute || RequestTimeout != 30*time.Second {
		t.Errorf("docs/safety.md says: a claim lapses after 15 minutes; a token request times out after 30 s")
	}
	if DefaultWriteDeadline != 8*time.Minute || MaxSpentWait != 30*time.Second || DefaultGrantRetry != 2*time.Minute {
		t.Errorf("docs/safety.md says: write-back 8 minutes, the retry after a spend within 30 seconds, retries within 2 minutes of the claim")
	}
}
