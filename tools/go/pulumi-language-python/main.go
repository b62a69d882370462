// Command pulumi-language-python is this project's own Pulumi language host for Python programs.
//
// The upstream host (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) is not served by the Go
// module proxy, so we implement the LanguageRuntime gRPC service ourselves on top of the pieces that sdk/v3 does
// ship: the protocol stubs (proto/go), the plugin serving helpers (go/common/util/rpcutil) and the Python
// virtualenv/pip handling (python/toolchain). Programs are executed by the `pulumi-language-python-exec` script
// from sdk/v3, which must sit next to this binary.
//
// Files:
//   - main.go      command line parsing and the gRPC server that the Pulumi CLI talks to
//   - host.go      the LanguageRuntime RPC methods (Run, InstallDependencies, About, ...)
//   - packages.go  discovery of the resource plugins required by the installed Python packages
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

// pluginVersion is what GetPluginInfo reports; it matches the sdk/v3 module the host is built against.
// It can be overridden at link time with -ldflags "-X main.pluginVersion=...".
var pluginVersion = "3.274.1"

// execScriptName is the Python shim that bootstraps the Pulumi runtime and then runs the user's program.
const execScriptName = "pulumi-language-python-exec"

// flags holds everything we understand on the command line. The CLI launches language plugins as
//
//	pulumi-language-python [--logtostderr] [-v=N] [--tracing URL] ENGINE_ADDRESS
//
// and older CLIs/tools also passed -root, -virtualenv, -toolchain, -typechecker (and -binary for Go).
type flags struct {
	engineAddress string
	tracing       string
	executor      string            // -use-executor: explicit path to the exec shim (testing)
	legacy        map[string]string // -root/-virtualenv/-toolchain/-typechecker, used as fallbacks only
	logToStderr   bool
	logFlow       bool
	verbose       int
}

// parseFlags is deliberately forgiving: the standard flag package aborts on an unknown flag, but a language host
// must keep working when a newer CLI passes something we don't know about, so unknown flags are skipped.
func parseFlags(args []string) flags {
	f := flags{legacy: map[string]string{}}
	withValue := map[string]bool{
		"tracing": true, "use-executor": true, "v": true,
		"root": true, "virtualenv": true, "toolchain": true, "typechecker": true, "binary": true,
	}
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			positional = append(positional, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if withValue[name] && !hasValue && i+1 < len(args) {
			i++
			value, hasValue = args[i], true
		}
		switch name {
		case "tracing":
			f.tracing = value
		case "use-executor":
			f.executor = value
		case "v":
			f.verbose, _ = strconv.Atoi(value)
		case "logtostderr":
			f.logToStderr = !hasValue || value == "true"
		case "logflow":
			f.logFlow = !hasValue || value == "true"
		case "root", "virtualenv", "toolchain", "typechecker":
			f.legacy[name] = value
		default:
			// -binary (Go host only) and anything unknown: ignored.
		}
	}
	if len(positional) > 0 {
		f.engineAddress = positional[0]
	}
	return f
}

func main() {
	// `pulumi-language-python --version` lets scripts/build-language-host check what is installed.
	if len(os.Args) == 2 && strings.TrimLeft(os.Args[1], "-") == "version" {
		fmt.Println(pluginVersion)
		return
	}
	f := parseFlags(os.Args[1:])
	logging.InitLogging(f.logToStderr, f.verbose, f.logFlow)
	cmdutil.InitTracing("pulumi-language-python", "pulumi-language-python", f.tracing)

	// By convention the exec shim is installed next to the language host binary.
	execPath := f.executor
	if execPath == "" {
		self, err := os.Executable()
		if err != nil {
			cmdutil.Exit(fmt.Errorf("could not determine current executable: %w", err))
		}
		if resolved, err := filepath.EvalSymlinks(self); err == nil {
			self = resolved
		}
		execPath = filepath.Join(filepath.Dir(self), execScriptName)
	}
	if _, err := os.Stat(execPath); err != nil {
		cmdutil.Exit(fmt.Errorf("missing executor %s: %w", execPath, err))
	}

	// Stop serving on SIGINT, or when the engine that launched us goes away (so we never linger as an orphan).
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if f.engineAddress != "" {
		if err := rpcutil.Healthcheck(ctx, f.engineAddress, 5*time.Minute, cancel); err != nil {
			cmdutil.Exit(fmt.Errorf("could not start health check against the engine: %w", err))
		}
	}
	stop := make(chan bool)
	go func() {
		<-ctx.Done()
		close(stop)
	}()

	host := newHost(execPath, f.engineAddress, f.tracing, f.legacy)
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start language host RPC server: %w", err))
	}

	// The spawner (the Pulumi CLI) reads the port from the first line of our stdout.
	fmt.Printf("%d\n", handle.Port)

	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host RPC stopped serving: %w", err))
	}
}
