package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// server is the ResourceProvider gRPC service, written against the wire protocol directly so that
// every answer has upstream's shape (pulumi-go-provider v1.3.0 provider.go, which serves upstream):
// no Handshake, the same Configure flags, the same diff and check-failure formats.
type server struct {
	pulumirpc.UnimplementedResourceProviderServer

	log *engineLog

	// Cancel RPC: ends the context of every operation in flight (go-provider middleware/cancel).
	mu        sync.Mutex
	cancelled context.Context
	cancelAll context.CancelFunc
}

func newServer(log *engineLog) *server {
	ctx, cancel := context.WithCancel(context.Background())
	return &server{log: log, cancelled: ctx, cancelAll: cancel}
}

// opContext joins the request's context with the Cancel RPC and the resource's custom timeout.
func (s *server) opContext(ctx context.Context, timeoutSeconds float64) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.cancelled, cancel)
	if timeoutSeconds > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, time.Duration(timeoutSeconds)*time.Second)
		return ctx, func() { cancelTimeout(); stop(); cancel() }
	}
	return ctx, func() { stop(); cancel() }
}

var propertyOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, KeepResources: true}

func unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return nil, nil
	}
	return plugin.UnmarshalProperties(s, propertyOpts)
}

func marshal(m resource.PropertyMap) (*structpb.Struct, error) {
	return plugin.MarshalProperties(m, propertyOpts)
}

func unknownType(t string) error {
	return status.Errorf(codes.InvalidArgument, "unknown resource type %q", t)
}

func (s *server) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	if _, err := semver.ParseTolerant(version); err != nil {
		return nil, fmt.Errorf("invalid provider version %q: %w", version, err)
	}
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (s *server) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: string(schemaJSON())}, nil
}

// Attach is how the engine hands its address to a provider started on its own (PULUMI_DEBUG_PROVIDERS).
func (s *server) Attach(_ context.Context, req *pulumirpc.PluginAttach) (*emptypb.Empty, error) {
	if err := s.log.connect(req.GetAddress()); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// The provider has no configuration.

func (s *server) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (s *server) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE, HasDetailedDiff: true}, nil
}

func (s *server) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true, AcceptResources: true,
		AcceptOutputs: true}, nil
}

func (s *server) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	s.cancelAll()
	return &emptypb.Empty{}, nil
}

func (s *server) GetMapping(context.Context, *pulumirpc.GetMappingRequest) (*pulumirpc.GetMappingResponse, error) {
	return &pulumirpc.GetMappingResponse{}, nil
}

func (s *server) GetMappings(context.Context, *pulumirpc.GetMappingsRequest) (*pulumirpc.GetMappingsResponse, error) {
	return &pulumirpc.GetMappingsResponse{}, nil
}

func rpcFailures(failures []plugin.CheckFailure) []*pulumirpc.CheckFailure {
	out := make([]*pulumirpc.CheckFailure, len(failures))
	for i, f := range failures {
		out[i] = &pulumirpc.CheckFailure{Property: string(f.Property), Reason: f.Reason}
	}
	return out
}

func (s *server) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if !knownType(req.GetType()) {
		return nil, unknownType(req.GetType())
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	checked, failures := checkInputs(req.GetType(), news)
	inputs, err := marshal(checked)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: inputs, Failures: rpcFailures(failures)}, nil
}

func (s *server) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	if !knownType(req.GetType()) {
		return nil, unknownType(req.GetType())
	}
	olds, err := unmarshal(req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	oldInputs, err := unmarshal(req.GetOldInputs())
	if err != nil {
		return nil, err
	}
	return diffInputs(req.GetType(), oldInputs, olds, news, req.GetIgnoreChanges()), nil
}

func (s *server) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	typ := req.GetType()
	if !knownType(typ) {
		return nil, unknownType(typ)
	}
	inputs, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	urn := resource.URN(req.GetUrn())
	ctx, cancel := s.opContext(ctx, req.GetTimeout())
	defer cancel()

	var id string
	var outputs resource.PropertyMap
	switch typ {
	case typeLocalCommand, typeRemoteCommand:
		// Upstream local/commandController.go and remote/commandController.go: the ID is the
		// resource name and 8 random hex digits, also in a preview.
		if id, err = resource.NewUniqueHex(urn.Name(), 8, 0); err != nil {
			return nil, err
		}
		outputs = commandOutputs(inputs, "", "")
		if req.GetPreview() {
			outputs = previewOutputs(typ, outputs, inputs, nil, true)
			break
		}
		if err := s.runLifecycleCommand(ctx, typ, urn, inputs, "create", outputs); err != nil {
			return nil, err
		}
	default:
		// Upstream remote/copyController.go and copyfileController.go: no ID in a preview; 8
		// random hex digits once copied.
		outputs = inputs.Copy()
		if req.GetPreview() {
			outputs = previewOutputs(typ, outputs, inputs, nil, true)
			break
		}
		if err := s.copy(ctx, typ, urn, inputs); err != nil {
			return nil, err
		}
		if id, err = resource.NewUniqueHex("", 8, 0); err != nil {
			return nil, err
		}
	}
	props, err := marshal(outputs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

func (s *server) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	typ := req.GetType()
	if !knownType(typ) {
		return nil, unknownType(typ)
	}
	if typ == typeCopyFile {
		// Upstream's CopyFile has no Update: every change is a replacement.
		return nil, status.Errorf(codes.Unimplemented, "Update is not implemented for resource %s", req.GetUrn())
	}
	olds, err := unmarshal(req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	for _, k := range req.GetIgnoreChanges() {
		if v, ok := olds[resource.PropertyKey(k)]; ok {
			news[resource.PropertyKey(k)] = v
		}
	}
	urn := resource.URN(req.GetUrn())
	ctx, cancel := s.opContext(ctx, req.GetTimeout())
	defer cancel()

	var outputs resource.PropertyMap
	switch typ {
	case typeLocalCommand, typeRemoteCommand:
		// The previous stdout/stderr are kept unless a command runs (they feed
		// PULUMI_COMMAND_STDOUT/STDERR); `update` runs if set, else `create`, else nothing.
		outputs = commandOutputs(news, plainString(olds, "stdout"), plainString(olds, "stderr"))
		if typ == typeLocalCommand {
			for _, k := range []resource.PropertyKey{"assets", "archive"} {
				if v, ok := olds[k]; ok {
					outputs[k] = v
				}
			}
		}
		if req.GetPreview() {
			outputs = previewOutputs(typ, outputs, news, olds, false)
			break
		}
		key := resource.PropertyKey("update")
		if _, ok := present(news, key); !ok {
			key = "create"
		}
		if _, ok := present(news, key); ok {
			if err := s.runLifecycleCommand(ctx, typ, urn, news, key, outputs); err != nil {
				return nil, err
			}
		}
	default:
		outputs = news.Copy()
		if req.GetPreview() {
			outputs = previewOutputs(typ, outputs, news, olds, false)
			break
		}
		// Upstream remote/copyController.go, Update: copy again only when the source's content
		// or the remote path changed (a new connection alone copies nothing).
		if sourceHash(olds) != sourceHash(news) || plainString(olds, "remotePath") != plainString(news, "remotePath") {
			if err := s.copy(ctx, typ, urn, news); err != nil {
				return nil, err
			}
		}
	}
	props, err := marshal(outputs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

func (s *server) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	typ := req.GetType()
	if !knownType(typ) {
		return nil, unknownType(typ)
	}
	if typ != typeLocalCommand && typ != typeRemoteCommand {
		return &emptypb.Empty{}, nil // copies leave the remote files in place
	}
	state, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext(ctx, req.GetTimeout())
	defer cancel()
	if _, ok := present(state, "delete"); !ok {
		return &emptypb.Empty{}, nil
	}
	outputs := state.Copy()
	if err := s.runLifecycleCommand(ctx, typ, resource.URN(req.GetUrn()), state, "delete", outputs); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Read returns the recorded state unchanged: a command's effects cannot be read back.
func (s *server) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	if !knownType(req.GetType()) {
		return nil, unknownType(req.GetType())
	}
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

// Invoke implements command:local:run (upstream local/runController.go): the checked arguments
// and what the command printed.
func (s *server) Invoke(ctx context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	if req.GetTok() != funcLocalRun {
		return nil, status.Errorf(codes.InvalidArgument, "unknown function %q", req.GetTok())
	}
	args, err := unmarshal(req.GetArgs())
	if err != nil {
		return nil, err
	}
	checked, failures := checkInputs(funcLocalRun, args)
	if len(failures) > 0 {
		return &pulumirpc.InvokeResponse{Failures: rpcFailures(failures)}, nil
	}
	ctx, cancel := s.opContext(ctx, 0)
	defer cancel()
	outputs := commandOutputs(checked, "", "")
	if err := s.runLifecycleCommand(ctx, typeLocalCommand, "", checked, "command", outputs); err != nil {
		return nil, err
	}
	ret, err := marshal(outputs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.InvokeResponse{Return: ret}, nil
}

// commandOutputs is a Command's state: its inputs as recorded plus stdout and stderr. Their
// secretness is never derived from the inputs (upstream's default wiring, pulumi-go-provider
// infer/resource.go ensureDefaultSecrets: only outputs named like an input inherit its
// secretness); a program that needs them secret says so with additionalSecretOutputs.
func commandOutputs(inputs resource.PropertyMap, stdout, stderr string) resource.PropertyMap {
	out := inputs.Copy()
	out["stdout"] = resource.NewProperty(stdout)
	out["stderr"] = resource.NewProperty(stderr)
	return out
}

// runLifecycleCommand runs props[cmdKey] of a local or remote Command with the previous
// stdout/stderr found in outputs, and records the new ones there.
func (s *server) runLifecycleCommand(ctx context.Context, typ string, urn resource.URN,
	props resource.PropertyMap, cmdKey resource.PropertyKey, outputs resource.PropertyMap,
) error {
	spec, ok, err := newRunSpec(urn, props, cmdKey, plainString(outputs, "stdout"), plainString(outputs, "stderr"))
	if err != nil || !ok {
		return err
	}
	if typ == typeLocalCommand {
		result, err := runLocal(ctx, spec, props, s.log)
		if err != nil {
			return err
		}
		outputs["stdout"], outputs["stderr"] = resource.NewProperty(result.stdout), resource.NewProperty(result.stderr)
		if result.assets != nil {
			outputs["assets"] = *result.assets
		}
		if result.archive != nil {
			outputs["archive"] = *result.archive
		}
		return nil
	}
	conn, err := parseConnection(props, "connection")
	if err != nil {
		return err
	}
	stdout, stderr, err := runRemote(ctx, conn, spec, s.log)
	if err != nil {
		return err
	}
	outputs["stdout"], outputs["stderr"] = resource.NewProperty(stdout), resource.NewProperty(stderr)
	return nil
}

func (s *server) copy(ctx context.Context, typ string, urn resource.URN, props resource.PropertyMap) error {
	conn, err := parseConnection(props, "connection")
	if err != nil {
		return err
	}
	if typ == typeCopyFile {
		return copyFile(ctx, conn, plainString(props, "localPath"), plainString(props, "remotePath"), s.log, urn)
	}
	src, err := sourceOf(props)
	if err != nil {
		return err
	}
	return copyToRemote(ctx, conn, src, plainString(props, "remotePath"), s.log, urn)
}
