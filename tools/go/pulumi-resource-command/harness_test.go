package main

// The tests of this module drive a provider *binary* over the plugin gRPC protocol, the way the
// Pulumi engine does, so the same assertions run against this module's build (default) and against
// any other build of pulumi-resource-command: `HL_COMMAND_PROVIDER=/path/to/binary go test ./...`
// runs them against that binary (e.g. upstream pulumi-command v1.2.1 built from its source). Each
// test states the upstream behaviour it pins and the upstream file it comes from (paths in the
// pulumi/pulumi-command repository at v1.2.1, or in the modules it builds on).

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// providerPath is the binary under test: HL_COMMAND_PROVIDER, or this module built by TestMain.
var providerPath string

// ownBuildPath is this module's build, for the tests that compare two providers.
var ownBuildPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hl-command-provider-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ownBuildPath = filepath.Join(dir, "pulumi-resource-command")
	build := exec.Command("go", "build", "-o", ownBuildPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building the provider under test: %v\n", err)
		os.Exit(1)
	}
	providerPath = ownBuildPath
	if other := os.Getenv("HL_COMMAND_PROVIDER"); other != "" {
		providerPath = other
		fmt.Fprintf(os.Stderr, "conformance tests run against HL_COMMAND_PROVIDER=%s\n", other)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// fakeEngine is the engine side a provider talks back to: it records Log calls.
type fakeEngine struct {
	pulumirpc.UnimplementedEngineServer
	addr string
	mu   sync.Mutex
	logs []*pulumirpc.LogRequest
}

func (e *fakeEngine) Log(_ context.Context, req *pulumirpc.LogRequest) (*emptypb.Empty, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.logs = append(e.logs, req)
	return &emptypb.Empty{}, nil
}

// messages returns the logged messages of at least the given severity, in order.
func (e *fakeEngine) messages(severity pulumirpc.LogSeverity) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, l := range e.logs {
		if l.Severity == severity {
			out = append(out, l.Message)
		}
	}
	return out
}

func startFakeEngine(t *testing.T) *fakeEngine {
	t.Helper()
	e := &fakeEngine{}
	stop := make(chan bool)
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterEngineServer(srv, e)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(stop); <-handle.Done })
	e.addr = "127.0.0.1:" + strconv.Itoa(handle.Port)
	return e
}

// prov is a running provider process and a client for it.
type prov struct {
	t      *testing.T
	path   string
	engine *fakeEngine
	client pulumirpc.ResourceProviderClient
	// configured is the answer to Configure: the protocol features the provider accepts.
	configured *pulumirpc.ConfigureResponse
}

// startProvider launches the provider under test (or path, when given) with extra environment.
func startProvider(t *testing.T, env ...string) *prov {
	t.Helper()
	return startProviderAt(t, providerPath, env...)
}

func startProviderAt(t *testing.T, path string, env ...string) *prov {
	t.Helper()
	engine := startFakeEngine(t)
	cmd := exec.Command(path, engine.addr)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("provider %s announced no port: %v", path, err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("provider %s announced %q instead of a port", path, line)
	}
	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(port),
		grpc.WithTransportCredentials(insecure.NewCredentials()), rpcutil.GrpcChannelOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	p := &prov{t: t, path: path, engine: engine, client: pulumirpc.NewResourceProviderClient(conn)}
	// What the engine sends first (pkg/resource/plugin provider_plugin.go): a handshake, then
	// Configure with secrets, resources and old inputs accepted.
	ctx := context.Background()
	_, err = p.client.Handshake(ctx, &pulumirpc.ProviderHandshakeRequest{EngineAddress: engine.addr})
	if err != nil && status.Code(err) != codes.Unimplemented {
		t.Fatalf("handshake: %v", err)
	}
	configured, err := p.client.Configure(ctx, &pulumirpc.ConfigureRequest{
		AcceptSecrets: true, AcceptResources: true, SendsOldInputs: true, SendsOldInputsToDelete: true,
		Args: mustMarshal(t, resource.PropertyMap{}), Variables: map[string]string{},
	})
	if err != nil {
		t.Fatalf("configure: %v", err)
	}
	p.configured = configured
	return p
}

var marshalOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, KeepResources: true}

func mustMarshal(t *testing.T, m resource.PropertyMap) *structpb.Struct {
	t.Helper()
	s, err := plugin.MarshalProperties(m, marshalOpts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustUnmarshal(t *testing.T, s *structpb.Struct) resource.PropertyMap {
	t.Helper()
	m, err := plugin.UnmarshalProperties(s, marshalOpts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func urnOf(typ, name string) resource.URN {
	return resource.NewURN("dev", "proj", "", tokens.Type(typ), name)
}

// check runs Check and fails the test on failures.
func (p *prov) check(typ string, news resource.PropertyMap) resource.PropertyMap {
	p.t.Helper()
	out, failures := p.checkFailures(typ, news)
	if len(failures) > 0 {
		p.t.Fatalf("check %s: %v", typ, failures)
	}
	return out
}

func (p *prov) checkFailures(typ string, news resource.PropertyMap) (resource.PropertyMap, []string) {
	p.t.Helper()
	resp, err := p.client.Check(context.Background(), &pulumirpc.CheckRequest{
		Urn: string(urnOf(typ, "res")), Name: "res", Type: typ,
		Olds: mustMarshal(p.t, resource.PropertyMap{}), News: mustMarshal(p.t, news),
	})
	if err != nil {
		p.t.Fatalf("check %s: %v", typ, err)
	}
	var failures []string
	for _, f := range resp.GetFailures() {
		failures = append(failures, f.GetProperty()+": "+f.GetReason())
	}
	return mustUnmarshal(p.t, resp.GetInputs()), failures
}

type created struct {
	id      string
	outputs resource.PropertyMap
}

func (p *prov) create(typ string, inputs resource.PropertyMap, preview bool) (created, error) {
	p.t.Helper()
	return p.createCtx(context.Background(), typ, inputs, preview, 0)
}

func (p *prov) createCtx(ctx context.Context, typ string, inputs resource.PropertyMap, preview bool,
	timeout float64,
) (created, error) {
	p.t.Helper()
	resp, err := p.client.Create(ctx, &pulumirpc.CreateRequest{
		Urn: string(urnOf(typ, "res")), Name: "res", Type: typ,
		Properties: mustMarshal(p.t, inputs), Preview: preview, Timeout: timeout,
	})
	if err != nil {
		return created{}, err
	}
	return created{id: resp.GetId(), outputs: mustUnmarshal(p.t, resp.GetProperties())}, nil
}

func (p *prov) diff(typ, id string, oldInputs, oldOutputs, news resource.PropertyMap) *pulumirpc.DiffResponse {
	p.t.Helper()
	resp, err := p.client.Diff(context.Background(), &pulumirpc.DiffRequest{
		Id: id, Urn: string(urnOf(typ, "res")), Name: "res", Type: typ,
		OldInputs: mustMarshal(p.t, oldInputs), Olds: mustMarshal(p.t, oldOutputs), News: mustMarshal(p.t, news),
	})
	if err != nil {
		p.t.Fatalf("diff %s: %v", typ, err)
	}
	return resp
}

func (p *prov) update(typ, id string, oldInputs, oldOutputs, news resource.PropertyMap, preview bool,
) (resource.PropertyMap, error) {
	p.t.Helper()
	resp, err := p.client.Update(context.Background(), &pulumirpc.UpdateRequest{
		Id: id, Urn: string(urnOf(typ, "res")), Name: "res", Type: typ, Preview: preview,
		OldInputs: mustMarshal(p.t, oldInputs), Olds: mustMarshal(p.t, oldOutputs), News: mustMarshal(p.t, news),
	})
	if err != nil {
		return nil, err
	}
	return mustUnmarshal(p.t, resp.GetProperties()), nil
}

func (p *prov) delete(typ, id string, oldInputs, outputs resource.PropertyMap) error {
	p.t.Helper()
	_, err := p.client.Delete(context.Background(), &pulumirpc.DeleteRequest{
		Id: id, Urn: string(urnOf(typ, "res")), Name: "res", Type: typ,
		OldInputs: mustMarshal(p.t, oldInputs), Properties: mustMarshal(p.t, outputs),
	})
	return err
}

func (p *prov) invoke(tok string, args resource.PropertyMap) (*pulumirpc.InvokeResponse, error) {
	p.t.Helper()
	return p.client.Invoke(context.Background(), &pulumirpc.InvokeRequest{Tok: tok, Args: mustMarshal(p.t, args)})
}

// resourceLife is one resource taken through its life like the engine does it: Check, Create,
// then Check/Diff/Update for each change, Delete at the end.
type resourceLife struct {
	p       *prov
	typ     string
	id      string
	inputs  resource.PropertyMap // the checked inputs the engine recorded
	outputs resource.PropertyMap
}

func (p *prov) life(typ string) *resourceLife { return &resourceLife{p: p, typ: typ} }

func (r *resourceLife) create(news resource.PropertyMap) error {
	r.p.t.Helper()
	inputs := r.p.check(r.typ, news)
	res, err := r.p.create(r.typ, inputs, false)
	if err != nil {
		return err
	}
	r.id, r.inputs, r.outputs = res.id, inputs, res.outputs
	return nil
}

// update applies news: it returns the diff, and runs Update when the diff asks for an in-place
// change (a replacement is left to the caller).
func (r *resourceLife) update(news resource.PropertyMap) (*pulumirpc.DiffResponse, error) {
	r.p.t.Helper()
	inputs := r.p.check(r.typ, news)
	d := r.p.diff(r.typ, r.id, r.inputs, r.outputs, inputs)
	if d.GetChanges() != pulumirpc.DiffResponse_DIFF_SOME || len(d.GetReplaces()) > 0 {
		return d, nil
	}
	outputs, err := r.p.update(r.typ, r.id, r.inputs, r.outputs, inputs, false)
	if err != nil {
		return d, err
	}
	r.inputs, r.outputs = inputs, outputs
	return d, nil
}

func (r *resourceLife) delete() error {
	r.p.t.Helper()
	return r.p.delete(r.typ, r.id, r.inputs, r.outputs)
}

func pm(v map[string]any) resource.PropertyMap { return resource.NewPropertyMapFromMap(v) }

func str(m resource.PropertyMap, k resource.PropertyKey) string {
	v := m[k]
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	if !v.IsString() {
		return ""
	}
	return v.StringValue()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
