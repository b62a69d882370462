package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

const (
	envPrevStdout = "PULUMI_COMMAND_STDOUT"
	envPrevStderr = "PULUMI_COMMAND_STDERR"
)

// runSpec is one run of a command (create, update or delete), local or remote.
type runSpec struct {
	urn        resource.URN
	command    string
	secretCmd  bool // the command text is secret: keep it out of error messages
	env        map[string]string
	stdin      string
	prevStdout string // PULUMI_COMMAND_STDOUT, when addPrev
	prevStderr string
	addPrev    bool
	logging    string // "", stdout, stderr, stdoutAndStderr, none
}

// newRunSpec reads the run settings of a Command from its properties (new inputs on
// create/update, old state on delete). prev is the previous stdout/stderr.
func newRunSpec(urn resource.URN, props resource.PropertyMap, cmdKey resource.PropertyKey,
	prevStdout, prevStderr string,
) (runSpec, bool, error) {
	cmd, ok, err := getString(props, cmdKey)
	if err != nil || !ok {
		return runSpec{}, false, err
	}
	spec := runSpec{urn: urn, command: cmd, prevStdout: prevStdout, prevStderr: prevStderr}
	spec.secretCmd = isSecret(props[cmdKey])
	if spec.env, err = getStringMap(props, "environment"); err != nil {
		return spec, false, err
	}
	if spec.stdin, _, err = getString(props, "stdin"); err != nil {
		return spec, false, err
	}
	if spec.addPrev, err = getBool(props, "addPreviousOutputInEnv", true); err != nil {
		return spec, false, err
	}
	if spec.logging, _, err = getString(props, "logging"); err != nil {
		return spec, false, err
	}
	return spec, true, nil
}

func (s runSpec) logStdout() bool {
	return s.logging == "" || s.logging == "stdout" || s.logging == "stdoutAndStderr"
}

func (s runSpec) logStderr() bool {
	return s.logging == "" || s.logging == "stderr" || s.logging == "stdoutAndStderr"
}

// prevEnv returns PULUMI_COMMAND_STDOUT/STDERR as upstream sets them: only when
// addPreviousOutputInEnv is on and the previous value is not empty.
func (s runSpec) prevEnv() map[string]string {
	env := map[string]string{}
	if s.addPrev {
		if s.prevStdout != "" {
			env[envPrevStdout] = s.prevStdout
		}
		if s.prevStderr != "" {
			env[envPrevStderr] = s.prevStderr
		}
	}
	return env
}

func (s runSpec) displayCommand() string {
	if s.secretCmd {
		return "[secret]"
	}
	return fmt.Sprintf("%q", s.command)
}

// capture collects a command's stdout and stderr, streams them line by line to the
// engine log as the `logging` setting asks, and keeps a combined copy for errors.
type capture struct {
	stdout, stderr bytes.Buffer
	combined       syncBuffer
	outLog, errLog *lineWriter
}

func newCapture(spec runSpec, log *engineLog) *capture {
	c := &capture{}
	if spec.logStdout() {
		c.outLog = &lineWriter{out: func(l string) { log.status(spec.urn, "%s", l) }}
	}
	if spec.logStderr() {
		c.errLog = &lineWriter{out: func(l string) { log.status(spec.urn, "%s", l) }}
	}
	return c
}

func (c *capture) writers() (io.Writer, io.Writer) {
	out := []io.Writer{&c.stdout, &c.combined}
	if c.outLog != nil {
		out = append(out, c.outLog)
	}
	errw := []io.Writer{&c.stderr, &c.combined}
	if c.errLog != nil {
		errw = append(errw, c.errLog)
	}
	return io.MultiWriter(out...), io.MultiWriter(errw...)
}

// finish flushes the log writers and returns stdout and stderr without one trailing
// newline, like upstream.
func (c *capture) finish() (string, string) {
	if c.outLog != nil {
		c.outLog.flush()
	}
	if c.errLog != nil {
		c.errLog.flush()
	}
	return strings.TrimSuffix(c.stdout.String(), "\n"), strings.TrimSuffix(c.stderr.String(), "\n")
}

func (c *capture) failure(err error, spec runSpec) error {
	return fmt.Errorf("%w: running %s:\n%s", err, spec.displayCommand(), c.combined.String())
}

// runLocal runs a local.Command's command with the interpreter (default /bin/sh -c)
// in dir (default: the provider's working directory, which is the program's).
func runLocal(ctx context.Context, spec runSpec, interpreter []string, dir string, log *engineLog) (string, string, error) {
	args := append([]string{}, interpreter...)
	if len(args) == 0 {
		args = []string{"/bin/sh", "-c"}
	}
	args = append(args, spec.command)

	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if dir != "" {
		cmd.Dir = dir
	} else if wd, err := os.Getwd(); err == nil {
		cmd.Dir = wd
	}
	cmd.Env = os.Environ()
	for _, k := range sortedKeys(spec.env) {
		cmd.Env = append(cmd.Env, k+"="+spec.env[k])
	}
	prev := spec.prevEnv()
	for _, k := range sortedKeys(prev) {
		cmd.Env = append(cmd.Env, k+"="+prev[k])
	}
	if spec.stdin != "" {
		cmd.Stdin = strings.NewReader(spec.stdin)
	}
	setProcessGroup(cmd)
	// A background process left holding stdout/stderr must not hang the deployment.
	cmd.WaitDelay = 10 * time.Second

	c := newCapture(spec, log)
	cmd.Stdout, cmd.Stderr = c.writers()
	err := cmd.Run()
	stdout, stderr := c.finish()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		return "", "", c.failure(err, spec)
	}
	return stdout, stderr, nil
}
