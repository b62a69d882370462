// Command pulumi-resource-command is hardened-lightsail's build of the pulumi-command 1.2.1
// resource provider plugin (local.Command, remote.Command, remote.CopyToRemote, remote.CopyFile
// and the local.run function), for machines where upstream's provider module can't be fetched.
// It must behave exactly like upstream: the tests pin upstream's behaviour fact by fact and,
// with HL_COMMAND_PROVIDER=/path/to/upstream/binary, run unchanged against upstream's build and
// compare the two answer by answer (see harness_test.go).
//
// Files: main.go (plugin start-up), server.go (the gRPC service), inputs.go (Check: upstream's
// input shapes), diff.go (Diff and preview outputs), exec.go (local commands), remote.go (SSH
// connections and remote commands), copy.go (SFTP copies), logging.go (engine log), schema.go.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

// version is reported by GetPluginInfo; set with -ldflags "-X main.version=...".
var version = "1.2.1"

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-command: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	showVersion := flag.Bool("version", false, "print the version and exit")
	// The engine may pass these (with --logflow); accept them whether or not a
	// dependency already registered them.
	if flag.Lookup("tracing") == nil {
		flag.String("tracing", "", "accepted for compatibility; ignored")
	}
	if flag.Lookup("v") == nil {
		flag.Int("v", 0, "accepted for compatibility; ignored")
	}
	if flag.Lookup("logtostderr") == nil {
		flag.Bool("logtostderr", false, "accepted for compatibility; ignored")
	}
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return nil
	}

	// The engine stops a plugin with SIGINT.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()

	log := &engineLog{}
	if args := flag.Args(); len(args) > 0 {
		// The engine passes its address; without it (attach mode) the address comes in Attach.
		if err := log.connect(args[0]); err != nil {
			return err
		}
		if err := rpcutil.Healthcheck(ctx, args[0], 5*time.Minute, cancel); err != nil {
			return fmt.Errorf("starting the engine health check: %w", err)
		}
	}

	srv := newServer(log)
	stop := make(chan bool)
	go func() {
		<-ctx.Done()
		srv.cancelAll()
		close(stop)
	}()
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init: func(grpcServer *grpc.Server) error {
			pulumirpc.RegisterResourceProviderServer(grpcServer, srv)
			return nil
		},
	})
	if err != nil {
		return err
	}
	// The plugin protocol: announce the port on stdout.
	fmt.Printf("%d\n", handle.Port)
	return <-handle.Done
}
