package testenv

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes the child process get SIGKILL when the test binary that started it dies,
// however it dies, so no server outlives a cancelled run.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
