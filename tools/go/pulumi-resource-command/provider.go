package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// cmdProvider implements plugin.Provider for the pulumi-command resource types;
// plugin.NewProviderServer turns it into the gRPC ResourceProvider service
// (property marshalling, secrets, handshake bookkeeping).
type cmdProvider struct {
	plugin.UnimplementedProvider

	log *engineLog

	cancelCtx context.Context
	cancel    context.CancelFunc
}

func newProvider(log *engineLog) *cmdProvider {
	ctx, cancel := context.WithCancel(context.Background())
	return &cmdProvider{log: log, cancelCtx: ctx, cancel: cancel}
}

// opContext joins the request context with the provider's cancellation (Cancel RPC)
// and the resource's custom timeout, if any.
func (p *cmdProvider) opContext(ctx context.Context, timeoutSeconds float64) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.cancelCtx, cancel)
	if timeoutSeconds > 0 {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeout(ctx, time.Duration(timeoutSeconds*float64(time.Second)))
		return ctx, func() { cancelT(); stop(); cancel() }
	}
	return ctx, func() { stop(); cancel() }
}

func (p *cmdProvider) Close() error { return nil }

func (p *cmdProvider) Handshake(_ context.Context, req plugin.ProviderHandshakeRequest,
) (*plugin.ProviderHandshakeResponse, error) {
	if err := p.log.connect(req.EngineAddress); err != nil {
		return nil, err
	}
	return &plugin.ProviderHandshakeResponse{AcceptSecrets: true, AcceptResources: true}, nil
}

func (p *cmdProvider) GetPluginInfo(context.Context) (plugin.PluginInfo, error) {
	v, err := semver.ParseTolerant(version)
	if err != nil {
		return plugin.PluginInfo{}, fmt.Errorf("invalid provider version %q: %w", version, err)
	}
	return plugin.PluginInfo{Version: &v}, nil
}

func (p *cmdProvider) GetSchema(context.Context, plugin.GetSchemaRequest) (plugin.GetSchemaResponse, error) {
	return plugin.GetSchemaResponse{Schema: schemaJSON()}, nil
}

func (p *cmdProvider) SignalCancellation(context.Context) error {
	p.cancel()
	return nil
}

// The provider has no configuration.

func (p *cmdProvider) CheckConfig(_ context.Context, req plugin.CheckConfigRequest) (plugin.CheckConfigResponse, error) {
	return plugin.CheckConfigResponse{Properties: req.News}, nil
}

func (p *cmdProvider) DiffConfig(context.Context, plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	return plugin.DiffResult{Changes: plugin.DiffNone}, nil
}

func (p *cmdProvider) Configure(context.Context, plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	return plugin.ConfigureResponse{}, nil
}

func unknownTypeErr(t string) error {
	return status.Errorf(codes.InvalidArgument, "unknown resource type %q (pulumi-resource-command %s "+
		"implements %s)", t, version, strings.Join([]string{typeLocalCommand, typeRemoteCommand,
		typeCopyToRemote, typeCopyFile}, ", "))
}

func (p *cmdProvider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	t := string(req.Type)
	if !knownType(t) {
		return plugin.CheckResponse{}, unknownTypeErr(t)
	}
	news, failures := checkInputs(t, req.News.Copy())
	return plugin.CheckResponse{Properties: news, Failures: failures}, nil
}

func (p *cmdProvider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	t := string(req.Type)
	if !knownType(t) {
		return plugin.DiffResult{}, unknownTypeErr(t)
	}
	return diffInputs(t, req.OldOutputs, req.NewInputs, req.IgnoreChanges), nil
}

func (p *cmdProvider) Create(ctx context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	t := string(req.Type)
	if !knownType(t) {
		return plugin.CreateResponse{}, unknownTypeErr(t)
	}
	id, err := resource.NewUniqueHex(idPrefix(t, req.Name), 8, 0)
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	ctx, cancel := p.opContext(ctx, req.Timeout)
	defer cancel()

	switch t {
	case typeLocalCommand, typeRemoteCommand:
		if req.Preview {
			return plugin.CreateResponse{ID: resource.ID(id),
				Properties: commandOutputs(req.Properties, unknownString(), unknownString())}, nil
		}
		stdout, stderr, err := p.runCommand(ctx, t, req.URN, req.Properties, "create", "", "")
		if err != nil {
			return plugin.CreateResponse{}, err
		}
		return plugin.CreateResponse{ID: resource.ID(id), Properties: commandOutputs(req.Properties,
			resource.NewProperty(stdout), resource.NewProperty(stderr))}, nil
	default: // copies
		if req.Preview {
			return plugin.CreateResponse{ID: resource.ID(id), Properties: req.Properties.Copy()}, nil
		}
		if err := p.copy(ctx, t, req.URN, req.Properties); err != nil {
			return plugin.CreateResponse{}, err
		}
		return plugin.CreateResponse{ID: resource.ID(id), Properties: req.Properties.Copy()}, nil
	}
}

func idPrefix(t, name string) string {
	if t == typeCopyToRemote {
		return "" // upstream: 8 random hex digits
	}
	return name
}

func (p *cmdProvider) Update(ctx context.Context, req plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	t := string(req.Type)
	if !knownType(t) {
		return plugin.UpdateResponse{}, unknownTypeErr(t)
	}
	ctx, cancel := p.opContext(ctx, req.Timeout)
	defer cancel()

	switch t {
	case typeLocalCommand, typeRemoteCommand:
		if req.Preview {
			return plugin.UpdateResponse{Properties: commandOutputs(req.NewInputs, unknownString(), unknownString())}, nil
		}
		oldStdout, oldStderr := req.OldOutputs["stdout"], req.OldOutputs["stderr"]
		prevOut, _, _ := getString(req.OldOutputs, "stdout")
		prevErr, _, _ := getString(req.OldOutputs, "stderr")
		key := resource.PropertyKey("update")
		if _, ok, _ := getString(req.NewInputs, "update"); !ok {
			key = "create"
		}
		if _, ok, _ := getString(req.NewInputs, key); !ok {
			// Neither update nor create: keep the previous outputs.
			if oldStdout.IsNull() {
				oldStdout = resource.NewProperty("")
			}
			if oldStderr.IsNull() {
				oldStderr = resource.NewProperty("")
			}
			return plugin.UpdateResponse{Properties: commandOutputs(req.NewInputs, oldStdout, oldStderr)}, nil
		}
		stdout, stderr, err := p.runCommand(ctx, t, req.URN, req.NewInputs, key, prevOut, prevErr)
		if err != nil {
			return plugin.UpdateResponse{}, err
		}
		return plugin.UpdateResponse{Properties: commandOutputs(req.NewInputs,
			resource.NewProperty(stdout), resource.NewProperty(stderr))}, nil
	default:
		if req.Preview {
			return plugin.UpdateResponse{Properties: req.NewInputs.Copy()}, nil
		}
		if needsCopy(t, req.OldOutputs, req.NewInputs) {
			if err := p.copy(ctx, t, req.URN, req.NewInputs); err != nil {
				return plugin.UpdateResponse{}, err
			}
		}
		return plugin.UpdateResponse{Properties: req.NewInputs.Copy()}, nil
	}
}

// needsCopy: upstream copies again on update when the source content or the remote
// path changed; this provider also copies when the target host, port or user changed.
func needsCopy(t string, olds, news resource.PropertyMap) bool {
	for _, k := range []resource.PropertyKey{"remotePath", "localPath"} {
		if !plain(olds[k]).DeepEquals(plain(news[k])) {
			return true
		}
	}
	if t == typeCopyFile {
		return true // no content hash to compare: copy again on any change, like upstream
	}
	oldSrc, errOld := sourceOf(t, olds)
	newSrc, errNew := sourceOf(t, news)
	if errOld != nil || errNew != nil || oldSrc.hash == "" || oldSrc.hash != newSrc.hash {
		return true
	}
	oc, errOld := parseConnection(olds, "connection")
	nc, errNew := parseConnection(news, "connection")
	if errOld != nil || errNew != nil {
		return true
	}
	return oc.host != nc.host || oc.port != nc.port || oc.user != nc.user
}

func (p *cmdProvider) Delete(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	t := string(req.Type)
	if !knownType(t) {
		return plugin.DeleteResponse{}, unknownTypeErr(t)
	}
	if t != typeLocalCommand && t != typeRemoteCommand {
		return plugin.DeleteResponse{}, nil // copies leave the remote files in place, like upstream
	}
	ctx, cancel := p.opContext(ctx, req.Timeout)
	defer cancel()
	state := req.Outputs
	prevOut, _, _ := getString(state, "stdout")
	prevErr, _, _ := getString(state, "stderr")
	if _, ok, _ := getString(state, "delete"); !ok {
		return plugin.DeleteResponse{}, nil
	}
	_, _, err := p.runCommand(ctx, t, req.URN, state, "delete", prevOut, prevErr)
	return plugin.DeleteResponse{}, err
}

// Read returns the recorded state unchanged: a command's effects cannot be read back.
func (p *cmdProvider) Read(_ context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	t := string(req.Type)
	if !knownType(t) {
		return plugin.ReadResponse{}, unknownTypeErr(t)
	}
	if len(req.State) == 0 {
		return plugin.ReadResponse{}, fmt.Errorf("%s cannot be read or imported without recorded state", t)
	}
	return plugin.ReadResponse{ReadResult: plugin.ReadResult{
		ID: req.ID, Inputs: req.Inputs, Outputs: req.State,
	}}, nil
}

// Invoke implements command:local:run.
func (p *cmdProvider) Invoke(ctx context.Context, req plugin.InvokeRequest) (plugin.InvokeResponse, error) {
	if string(req.Tok) != funcLocalRun {
		return plugin.InvokeResponse{}, status.Errorf(codes.InvalidArgument, "unknown function %q", req.Tok)
	}
	args, failures := checkInputs(funcLocalRun, req.Args.Copy())
	if len(failures) > 0 {
		return plugin.InvokeResponse{Failures: failures}, nil
	}
	ctx, cancel := p.opContext(ctx, 0)
	defer cancel()
	stdout, stderr, err := p.runCommand(ctx, typeLocalCommand, "", args, "command", "", "")
	if err != nil {
		return plugin.InvokeResponse{}, err
	}
	out := args.Copy()
	out["stdout"] = resource.NewProperty(stdout)
	out["stderr"] = resource.NewProperty(stderr)
	return plugin.InvokeResponse{Properties: out}, nil
}

// runCommand runs props[cmdKey] of a local or remote Command.
func (p *cmdProvider) runCommand(ctx context.Context, t string, urn resource.URN, props resource.PropertyMap,
	cmdKey resource.PropertyKey, prevOut, prevErr string,
) (string, string, error) {
	spec, ok, err := newRunSpec(urn, props, cmdKey, prevOut, prevErr)
	if err != nil || !ok {
		return "", "", err
	}
	if t == typeLocalCommand {
		interp, _, err := getStringList(props, "interpreter")
		if err != nil {
			return "", "", err
		}
		dir, _, err := getString(props, "dir")
		if err != nil {
			return "", "", err
		}
		return runLocal(ctx, spec, interp, dir, p.log)
	}
	conn, err := parseConnection(props, "connection")
	if err != nil {
		return "", "", err
	}
	return runRemote(ctx, conn, spec, p.log)
}

func (p *cmdProvider) copy(ctx context.Context, t string, urn resource.URN, props resource.PropertyMap) error {
	conn, err := parseConnection(props, "connection")
	if err != nil {
		return err
	}
	src, err := sourceOf(t, props)
	if err != nil {
		return err
	}
	remotePath, ok, err := getString(props, "remotePath")
	if err != nil || !ok {
		return fmt.Errorf("remotePath: %v", orMissing(err))
	}
	return copyToRemote(ctx, conn, src, remotePath, p.log, urn)
}
