//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// setProcessGroup runs the command in its own process group so that cancelling
// kills the whole tree the shell started, not only the shell.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
