package testenv

import (
	"os"
	"testing"
)

// unavailable ends a test whose real dependency cannot run here: skipped with the reason, or
// failed when CI=true, where a skipped suite would pass unseen.
func unavailable(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatal(reason)
	}
	tb.Skip(reason)
}

// Unavailable is unavailable for tests outside this package: a dependency of theirs (root, a
// system tool) that cannot run here skips the test with the reason, or fails it when CI=true.
func Unavailable(tb testing.TB, reason string) {
	tb.Helper()
	unavailable(tb, reason)
}
