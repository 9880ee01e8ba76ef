package rotate

import "testing"

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
