package ha

import (
	"os"
	"testing"

	"token-rotator/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopSharedCluster()
	testenv.RemoveJobBinary()
	os.Exit(code)
}
