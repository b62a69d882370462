package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// exitCodeUserErrorShown is the exit code with which pulumi-language-python-exec signals that it has already
// reported the failure to the user (through the engine's log); the engine then must not print another error.
const exitCodeUserErrorShown = 32

// host implements pulumirpc.LanguageRuntimeServer. Methods we don't override (GenerateProject, GeneratePackage,
// GenerateProgram, Pack, Link, Template, RunPlugin) come from UnimplementedLanguageRuntimeServer and answer
// codes.Unimplemented, which the CLI handles as "not supported by this language".
type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	execPath string            // absolute path of pulumi-language-python-exec
	tracing  string            // tracing endpoint forwarded to the program
	legacy   map[string]string // fallback options from obsolete command line flags

	mu            sync.Mutex
	engineAddress string             // positional argument, or whatever Handshake told us
	cancelled     context.Context    // done once the engine called Cancel
	cancel        context.CancelFunc // cancels `cancelled`
}

func newHost(execPath, engineAddress, tracing string, legacy map[string]string) *host {
	ctx, cancel := context.WithCancel(context.Background())
	return &host{
		execPath: execPath, engineAddress: engineAddress, tracing: tracing, legacy: legacy,
		cancelled: ctx, cancel: cancel,
	}
}

func (h *host) engine() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.engineAddress
}

// Handshake is the first call of newer engines; it carries the engine address (which we also got on argv).
func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	if req.RootDirectory != nil && h.legacy["root"] == "" {
		h.legacy["root"] = req.GetRootDirectory()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: pluginVersion}, nil
}

// Cancel aborts running programs; the engine calls it when the user interrupts an operation. It is final: the
// engine starts a new host process for its next operation.
func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	h.cancel()
	return &emptypb.Empty{}, nil
}

// pythonOptions turns the `runtime.options` of Pulumi.yaml (virtualenv, toolchain, typechecker) into toolchain
// options. A relative virtualenv is resolved against the project root (the directory holding Pulumi.yaml).
func (h *host) pythonOptions(info *pulumirpc.ProgramInfo) (toolchain.PythonOptions, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	opts := toolchain.PythonOptions{Root: info.GetRootDirectory(), ProgramDir: info.GetProgramDirectory()}
	if opts.Root == "" {
		opts.Root = h.legacy["root"]
	}
	if opts.Root == "" {
		opts.Root, _ = os.Getwd()
	}
	if opts.ProgramDir == "" {
		opts.ProgramDir = opts.Root
	}

	raw := info.GetOptions().AsMap()
	get := func(key string) (string, error) {
		v, ok := raw[key]
		if !ok {
			return h.legacy[key], nil
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("the %q runtime option in Pulumi.yaml must be a string", key)
		}
		return s, nil
	}

	var err error
	if opts.Virtualenv, err = get("virtualenv"); err != nil {
		return opts, err
	}
	tc, err := get("toolchain")
	if err != nil {
		return opts, err
	}
	switch tc {
	case "":
		opts.Toolchain = toolchain.Auto // uv if uv.lock is found, poetry if poetry.lock, else pip
	case "pip":
		opts.Toolchain = toolchain.Pip
	case "poetry":
		opts.Toolchain = toolchain.Poetry
	case "uv":
		opts.Toolchain = toolchain.Uv
	default:
		return opts, fmt.Errorf("unsupported toolchain option: %s", tc)
	}
	checker, err := get("typechecker")
	if err != nil {
		return opts, err
	}
	switch checker {
	case "":
	case "mypy":
		opts.Typechecker = toolchain.TypeCheckerMypy
	case "pyright":
		opts.Typechecker = toolchain.TypeCheckerPyright
	default:
		return opts, fmt.Errorf("unsupported typechecker option: %s", checker)
	}
	return opts, nil
}

// Run executes the program: `python -u pulumi-language-python-exec --monitor ... <entry point> [args...]`, with the
// interpreter (and PATH/VIRTUAL_ENV) of the configured virtualenv and the stack config in the environment.
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	if req.GetAttachDebugger() {
		return &pulumirpc.RunResponse{Error: "attaching a debugger is not supported by this language host"}, nil
	}
	opts, err := h.pythonOptions(req.GetInfo())
	if err != nil {
		return nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	if err := typecheck(ctx, tc, opts); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	// Like upstream's host (sdk/python/cmd/pulumi-language-python, Run): the program is
	// interrupted (SIGINT, then killed if it lingers) when the engine calls Cancel or drops this
	// RPC, which it does when an update fails. The program itself must end quietly then: see
	// components/engine_shutdown.py.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	cancelledStop := context.AfterFunc(h.cancelled, stop)
	defer cancelledStop()

	cmd, err := tc.Command(ctx, append([]string{"-u", h.execPath}, h.execArgs(req)...)...)
	if err != nil {
		return nil, err
	}
	// Always set both variables (an empty map is "{}", never "null") so nothing leaks in from our own environment.
	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, fmt.Errorf("serializing configuration: %w", err)
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, fmt.Errorf("serializing secret configuration keys: %w", err)
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON))
	if req.GetPwd() != "" {
		cmd.Dir = req.GetPwd()
	}
	// The engine shows our stdout/stderr to the user, so the program's output goes straight there.
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// On cancellation, interrupt first so Python can unwind, and kill only if it does not exit.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	logging.V(5).Infof("language host launching process: %s", strings.Join(cmd.Args, " "))

	err = cmd.Run()
	// Python may have crashed before flushing; make sure what reached us is passed on before we answer.
	_ = os.Stdout.Sync()
	_ = os.Stderr.Sync()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return &pulumirpc.RunResponse{}, nil
	case errors.As(err, &exitErr):
		ws, ok := exitErr.Sys().(syscall.WaitStatus)
		switch {
		case ok && ws.Exited() && ws.ExitStatus() == exitCodeUserErrorShown:
			// The exec shim already logged the error (e.g. the traceback) through the engine.
			return &pulumirpc.RunResponse{Bail: true}, nil
		case ok && ws.Exited():
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("program exited with non-zero exit code: %d", ws.ExitStatus()),
			}, nil
		default:
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited unexpectedly: %v", exitErr)}, nil
		}
	default:
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("problem executing program (could not run language executor): %v", err),
		}, nil
	}
}

// execArgs builds the command line understood by pulumi-language-python-exec (see its argparse setup).
func (h *host) execArgs(req *pulumirpc.RunRequest) []string {
	var args []string
	add := func(name, value string) {
		if value != "" {
			args = append(args, "--"+name, value)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engine())
	add("project", req.GetProject())
	add("root_directory", req.GetInfo().GetRootDirectory())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", strconv.FormatBool(req.GetDryRun()))
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("tracing", h.tracing)
	add("organization", req.GetOrganization())

	// The entry point is relative to --pwd (the shim chdirs there); "." means <dir>/__main__.py.
	program := req.GetInfo().GetEntryPoint()
	if program == "" {
		program = req.GetProgram()
	}
	if program == "" {
		program = "."
	}
	return append(append(args, program), req.GetArgs()...)
}

// typecheck runs mypy or pyright over the program directory when `runtime.options.typechecker` asks for it.
func typecheck(ctx context.Context, tc toolchain.Toolchain, opts toolchain.PythonOptions) error {
	var name string
	args := []string{}
	switch opts.Typechecker {
	case toolchain.TypeCheckerMypy:
		name = "mypy"
		// Don't type check the virtualenv itself when it lives inside the program directory.
		if venv, err := tc.VirtualEnvPath(ctx); err == nil && venv != "" {
			if rel, err := filepath.Rel(opts.ProgramDir, venv); err == nil && !strings.HasPrefix(rel, "..") {
				args = append(args, "--exclude", rel)
			}
		}
	case toolchain.TypeCheckerPyright:
		name = "pyright"
	default:
		return nil
	}
	cmd, err := tc.ModuleCommand(ctx, name, append(args, opts.ProgramDir)...)
	if err != nil {
		return err
	}
	cmd.Dir, cmd.Stdout, cmd.Stderr = opts.ProgramDir, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s failed: %w (is %s installed in the program's environment?)", name, err, name)
	}
	return nil
}

// InstallDependencies creates the virtualenv (when configured) and installs requirements.txt into it, streaming
// pip's output back to the CLI (`pulumi install`, `pulumi new`, `pulumi up` on a fresh checkout).
func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	opts, err := h.pythonOptions(req.GetInfo())
	if err != nil {
		return err
	}
	// Plugins always get their own virtualenv; programs may use the ambient Python for compatibility.
	if req.GetIsPlugin() && opts.Virtualenv == "" && opts.Toolchain != toolchain.Poetry {
		opts.Virtualenv = "venv"
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeInstallDependenciesStreams(server, req.GetIsTerminal())
	if err != nil {
		return err
	}
	defer closer.Close()

	fmt.Fprintf(stdout, "Installing dependencies...\n\n")
	if err := tc.InstallDependencies(server.Context(), opts.ProgramDir, req.GetUseLanguageVersionTools(),
		true /*showOutput*/, stdout, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Finished installing dependencies\n\n")
	return closer.Close()
}

// RuntimeOptionsPrompts asks nothing extra during `pulumi new`.
func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// About reports the interpreter used for the program (`pulumi about`, update metadata).
func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	opts, err := h.pythonOptions(req.GetInfo())
	if err != nil {
		return nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	metadata := map[string]string{}
	if opts.Toolchain != toolchain.Auto { // with Auto, the resolved toolchain is not exposed by the package
		metadata["toolchain"] = strings.ToLower(toolchain.Name(opts.Toolchain))
	}
	if info.ToolchainVersion.Major != 0 || info.ToolchainVersion.Minor != 0 {
		metadata["toolchainVersion"] = info.ToolchainVersion.String()
	}
	return &pulumirpc.AboutResponse{
		Executable: info.PythonExecutable,
		Version:    info.PythonVersion.String(),
		Metadata:   metadata,
	}, nil
}

// GetProgramDependencies lists the installed Python packages (`pulumi about`).
func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	opts, err := h.pythonOptions(req.GetInfo())
	if err != nil {
		return nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, fmt.Errorf("failed to get python dependencies: %w", err)
	}
	deps := make([]*pulumirpc.DependencyInfo, 0, len(pkgs))
	for _, p := range pkgs {
		deps = append(deps, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}

// engineLog returns writers that forward text to the engine as ephemeral log messages, which is how output of
// work done outside of a streaming RPC (e.g. creating the virtualenv) reaches the user. Without an engine address
// the output goes to our stderr, which the engine also displays.
func (h *host) engineLog(ctx context.Context) (stdout, stderr io.Writer, closer func()) {
	addr := h.engine()
	if addr == "" {
		return os.Stderr, os.Stderr, func() {}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		rpcutil.GrpcChannelOptions())
	if err != nil {
		return os.Stderr, os.Stderr, func() {}
	}
	client := pulumirpc.NewEngineClient(conn)
	stream := rand.Int32() //nolint:gosec // only groups related messages in the display
	mk := func(sev pulumirpc.LogSeverity) io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			_, err := client.Log(ctx, &pulumirpc.LogRequest{
				Severity: sev, Message: strings.ToValidUTF8(string(p), "\uFFFD"), Ephemeral: true, StreamId: stream,
			})
			if err != nil {
				return 0, err
			}
			return len(p), nil
		})
	}
	return mk(pulumirpc.LogSeverity_INFO), mk(pulumirpc.LogSeverity_ERROR), func() { _ = conn.Close() }
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
