package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var job struct {
	once sync.Once
	path string
	err  error
}

// JobBinary builds the token-rotator command once per test binary, for tests that run it as
// separate processes, and returns its path. RemoveJobBinary deletes it: call it from TestMain.
func JobBinary(tb testing.TB) string {
	tb.Helper()
	job.once.Do(func() {
		dir, err := os.MkdirTemp("", "token-rotator-bin")
		if err != nil {
			job.err = err
			return
		}
		job.path = filepath.Join(dir, "token-rotator")
		if out, err := exec.Command("go", "build", "-o", job.path, "token-rotator").CombinedOutput(); err != nil {
			job.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if job.err != nil {
		tb.Fatal(job.err)
	}
	return job.path
}

// RemoveJobBinary deletes what JobBinary built, if anything.
func RemoveJobBinary() {
	if job.path != "" {
		_ = os.RemoveAll(filepath.Dir(job.path))
	}
}
