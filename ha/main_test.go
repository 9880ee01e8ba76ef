package ha

import (
	"os"
	"testing"

	"token-rotator/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopSharedCluster()
	os.Exit(code)
}
