package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"

	"github.com/gobwas/glob"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/archive"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/asset"
)

const (
	envPrevStdout = "PULUMI_COMMAND_STDOUT"
	envPrevStderr = "PULUMI_COMMAND_STDERR"
)

// runSpec is one run of a command (create, update or delete), local or remote.
type runSpec struct {
	urn        resource.URN
	command    string
	env        map[string]string
	stdin      string
	prevStdout string // the previous run's output, for PULUMI_COMMAND_STDOUT
	prevStderr string
	addPrev    bool
	logging    string // "", stdout, stderr, stdoutAndStderr, none
}

// newRunSpec reads the run settings of a Command from its properties (new inputs on
// create/update, the recorded state on delete).
func newRunSpec(urn resource.URN, props resource.PropertyMap, cmdKey resource.PropertyKey,
	prevStdout, prevStderr string,
) (runSpec, bool, error) {
	cmd, ok, err := getString(props, cmdKey)
	if err != nil || !ok {
		return runSpec{}, false, err
	}
	spec := runSpec{urn: urn, command: cmd, prevStdout: prevStdout, prevStderr: prevStderr, addPrev: true}
	if spec.env, err = getStringMap(props, "environment"); err != nil {
		return spec, false, err
	}
	if spec.stdin, _, err = getString(props, "stdin"); err != nil {
		return spec, false, err
	}
	if v, ok := present(props, "addPreviousOutputInEnv"); ok && v.IsBool() {
		spec.addPrev = v.BoolValue()
	}
	spec.logging = plainString(props, "logging")
	return spec, true, nil
}

// Upstream local/logging.go and remote/logging.go: an unset or unknown value logs nothing only
// for the one stream it doesn't name.
func (s runSpec) logStdout() bool {
	return s.logging == "" || s.logging == "stdout" || s.logging == "stdoutAndStderr"
}

func (s runSpec) logStderr() bool {
	return s.logging == "" || s.logging == "stderr" || s.logging == "stdoutAndStderr"
}

// capture collects a command's stdout and stderr separately and combined (for the error
// message), and streams the lines that `logging` asks for to the engine as status messages.
type capture struct {
	stdout, stderr bytes.Buffer
	combined       syncBuffer
	logLines       *lineWriter // one stream for both, like upstream's single logging pipe
}

func newCapture(spec runSpec, log *engineLog) *capture {
	return &capture{logLines: &lineWriter{out: func(l string) { log.status(spec.urn, "%s", l) }}}
}

func (c *capture) writers(spec runSpec) (io.Writer, io.Writer) {
	out := []io.Writer{&c.stdout, &c.combined}
	if spec.logStdout() {
		out = append(out, c.logLines)
	}
	errw := []io.Writer{&c.stderr, &c.combined}
	if spec.logStderr() {
		errw = append(errw, c.logLines)
	}
	return io.MultiWriter(out...), io.MultiWriter(errw...)
}

// finish flushes the log and returns stdout and stderr without one trailing newline.
func (c *capture) finish() (string, string) {
	c.logLines.flush()
	return strings.TrimSuffix(c.stdout.String(), "\n"), strings.TrimSuffix(c.stderr.String(), "\n")
}

// failure is upstream's error text for a command that failed: the error, the command (quoted,
// as given, even when it is a secret: upstream decodes inputs without their secretness) and
// everything it printed.
func (c *capture) failure(err error, command string) error {
	return fmt.Errorf("%w: running %q:\n%s", err, command, c.combined.String())
}

type localResult struct {
	stdout, stderr string
	assets         *resource.PropertyValue // assetPaths matches, when asked for
	archive        *resource.PropertyValue // archivePaths matches as one archive, when asked for
}

// runLocal runs a local.Command's command like upstream local/run.go: with the interpreter
// (default /bin/sh -c) in dir (default: the provider's working directory, the program's); the
// environment is ours plus `environment` plus PULUMI_COMMAND_STDOUT/STDERR. A cancelled
// command's process is killed (its children are not), and the output is read until every
// process holding it has closed it.
func runLocal(ctx context.Context, spec runSpec, props resource.PropertyMap, log *engineLog) (localResult, error) {
	interpreter, _, err := getStringList(props, "interpreter")
	if err != nil {
		return localResult{}, err
	}
	args := append([]string{}, interpreter...)
	if len(args) == 0 {
		args = []string{"/bin/sh", "-c"}
	}
	args = append(args, spec.command)

	cmd := exec.CommandContext(ctx, args[0], args[1:]...) //nolint:gosec // running the user's command is the job
	c := newCapture(spec, log)
	cmd.Stdout, cmd.Stderr = c.writers(spec)
	if dir, ok, err := getString(props, "dir"); err != nil {
		return localResult{}, err
	} else if ok {
		cmd.Dir = dir
	} else if cmd.Dir, err = os.Getwd(); err != nil {
		return localResult{}, err
	}
	cmd.Env = os.Environ()
	for _, k := range sortedKeys(spec.env) {
		cmd.Env = append(cmd.Env, k+"="+spec.env[k])
	}
	if spec.addPrev {
		if spec.prevStdout != "" {
			cmd.Env = append(cmd.Env, envPrevStdout+"="+spec.prevStdout)
		}
		if spec.prevStderr != "" {
			cmd.Env = append(cmd.Env, envPrevStderr+"="+spec.prevStderr)
		}
	}
	if spec.stdin != "" {
		cmd.Stdin = strings.NewReader(spec.stdin)
	}
	err = cmd.Run()
	stdout, stderr := c.finish()
	if err != nil {
		return localResult{}, c.failure(err, spec.command)
	}
	result := localResult{stdout: stdout, stderr: stderr}
	if globs, ok, err := getStringList(props, "assetPaths"); err != nil {
		return localResult{}, err
	} else if ok {
		found, err := globAssets(cmd.Dir, globs)
		if err != nil {
			return localResult{}, err
		}
		assets := resource.PropertyMap{}
		for p, a := range found {
			assets[resource.PropertyKey(p)] = resource.NewProperty(a)
		}
		v := resource.NewProperty(assets)
		result.assets = &v
	}
	if globs, ok, err := getStringList(props, "archivePaths"); err != nil {
		return localResult{}, err
	} else if ok {
		found, err := globAssets(cmd.Dir, globs)
		if err != nil {
			return localResult{}, err
		}
		members := map[string]any{}
		for p, a := range found {
			members[p] = a
		}
		arch, err := archive.FromAssets(members)
		if err != nil {
			return localResult{}, err
		}
		v := resource.NewProperty(arch)
		result.archive = &v
	}
	return result, nil
}

// globAssets finds the files under dir that the globs select, in order: `!pattern` excludes
// what earlier patterns included; `*` stops at `/`, `**` does not (github.com/gobwas/glob, the
// library upstream uses). Keys are paths relative to dir.
func globAssets(dir string, globs []string) (map[string]*asset.Asset, error) {
	type rule struct {
		glob    glob.Glob
		exclude bool
	}
	rules := make([]rule, len(globs))
	for i, g := range globs {
		exclude := strings.HasPrefix(g, "!")
		compiled, err := glob.Compile(strings.TrimPrefix(g, "!"), '/')
		if err != nil {
			return nil, err
		}
		rules[i] = rule{compiled, exclude}
	}
	found := map[string]*asset.Asset{}
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		for _, r := range rules {
			if !r.glob.Match(p) {
				continue
			}
			if r.exclude {
				delete(found, p)
				continue
			}
			a, err := asset.FromPath(path.Join(dir, p))
			if err != nil {
				return err
			}
			found[p] = a
		}
		return nil
	})
	return found, err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
