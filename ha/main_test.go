package ha

import (
	"os"
	"path/filepath"
	"testing"

	"token-rotator/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopSharedCluster()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath)) // the job built for this run
	}
	os.Exit(code)
}
