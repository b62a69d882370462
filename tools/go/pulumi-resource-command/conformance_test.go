package main

// Facts about upstream pulumi-command v1.2.1, one test each, with the upstream file that makes it
// so (paths in github.com/pulumi/pulumi-command at v1.2.1 unless another module is named). They
// run against this build by default and against HL_COMMAND_PROVIDER when set, where they must
// pass unchanged.

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/asset"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func remoteInputs(s *testSSHServer, extra map[string]any) resource.PropertyMap {
	in := pm(extra)
	in["connection"] = resource.NewProperty(pm(s.connMap()))
	return in
}

// provider/cmd/pulumi-resource-command/main.go serves through pulumi-go-provider v1.3.0
// (provider.go): no Handshake, and Configure accepts secrets, resources, outputs and previews.
func TestProtocolLikeUpstream(t *testing.T) {
	p := startProvider(t)
	_, err := p.client.Handshake(context.Background(), &pulumirpc.ProviderHandshakeRequest{EngineAddress: p.engine.addr})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Handshake: %v, want Unimplemented", err)
	}
	c := p.configured
	if !c.GetAcceptSecrets() || !c.GetAcceptResources() || !c.GetAcceptOutputs() || !c.GetSupportsPreview() {
		t.Fatalf("Configure answered %v", c)
	}
	info, err := p.client.GetPluginInfo(context.Background(), &emptypb.Empty{})
	if err != nil || info.GetVersion() != "1.2.1" {
		t.Fatalf("plugin info %v %v", info, err)
	}
}

// remote/connection.go (Connection.Annotate): user root, port 22, dialErrorLimit 10 and
// perDialTimeout 15 are filled in; remote/command.go and local/base.go declare no default for
// addPreviousOutputInEnv, so Check never adds it (a state that has it shows a diff under upstream).
func TestCheckFillsConnectionDefaultsOnly(t *testing.T) {
	p := startProvider(t)
	checked := p.check(typeRemoteCommand, pm(map[string]any{"create": "true", "connection": map[string]any{"host": "h"}}))
	if _, ok := checked["addPreviousOutputInEnv"]; ok {
		t.Fatalf("Check added addPreviousOutputInEnv: %s", renderMap(checked))
	}
	got := render(checked["connection"])
	want := `secret({dialErrorLimit: 10, host: "h", perDialTimeout: 15, port: 22, user: "root"})`
	if got != want {
		t.Fatalf("connection %s, want %s", got, want)
	}
	local := p.check(typeLocalCommand, pm(map[string]any{"create": "true"}))
	if renderMap(local) != `{create: "true"}` {
		t.Fatalf("local inputs %s", renderMap(local))
	}
}

// remote/command.go (`provider:"secret"` on connection) and remote/connection.go (on password,
// privateKey, privateKeyPassword): secret in the checked inputs, also inside a proxy.
func TestCheckMakesTheConnectionAndItsCredentialsSecret(t *testing.T) {
	p := startProvider(t)
	checked := p.check(typeRemoteCommand, pm(map[string]any{"connection": map[string]any{"host": "h",
		"password": "pw", "proxy": map[string]any{"host": "p", "privateKey": "k"}}}))
	got := render(checked["connection"])
	for _, want := range []string{`secret({`, `password: secret("pw")`, `privateKey: secret("k")`} {
		if !strings.Contains(got, want) {
			t.Fatalf("connection %s lacks %s", got, want)
		}
	}
}

// Upstream validates neither `logging` against its enum nor `hostKey` at check time
// (remote/connection.go parses the host key when it connects): both fail only when used.
func TestCheckLeavesLoggingAndHostKeyToRunTime(t *testing.T) {
	p := startProvider(t)
	_, failures := p.checkFailures(typeRemoteCommand, pm(map[string]any{"logging": "loud",
		"connection": map[string]any{"host": "h", "hostKey": "not a key"}}))
	if len(failures) != 0 {
		t.Fatalf("failures: %v", failures)
	}
	_, failures = p.checkFailures(typeRemoteCommand, pm(map[string]any{"extra": 1.0, "connection": map[string]any{"host": "h"}}))
	if len(failures) != 1 || !strings.HasPrefix(failures[0], "extra: Unrecognized field 'extra'") {
		t.Fatalf("failures for an unknown field: %v", failures)
	}
}

// pulumi-go-provider v1.3.0 infer/resource.go (ensureDefaultSecrets): only an output named like an
// input inherits its secretness, so stdout/stderr are never made secret by the provider, whatever
// the inputs; a program that prints secrets marks them with additionalSecretOutputs.
func TestStdoutIsNeverMadeSecret(t *testing.T) {
	p := startProvider(t)
	in := resource.PropertyMap{"create": resource.MakeSecret(resource.NewProperty("echo $S")),
		"environment": resource.MakeSecret(resource.NewProperty(pm(map[string]any{"S": "s3cr3t"})))}
	res, err := p.create(typeLocalCommand, p.check(typeLocalCommand, in), false)
	must(t, err)
	if got := render(res.outputs["stdout"]); got != `"s3cr3t"` {
		t.Fatalf("stdout %s: want the plain text", got)
	}
	if !res.outputs["environment"].IsSecret() || !res.outputs["create"].IsSecret() {
		t.Fatalf("the secret inputs must stay secret in the state: %s", renderMap(res.outputs))
	}
}

// remote/commandOutputs.go: each `environment` variable is an SSH "env" request; one the server
// refuses (no AcceptEnv) fails the step with an error logged; nothing is exported instead.
func TestRemoteEnvironmentNeedsAcceptEnv(t *testing.T) {
	server := startSSHServer(t, false)
	p := startProvider(t)
	in := remoteInputs(server, map[string]any{"create": "echo ran", "environment": map[string]any{"RULES": "v4"}})
	_, err := p.create(typeRemoteCommand, p.check(typeRemoteCommand, in), false)
	if err == nil || !strings.Contains(err.Error(), `could not set environment variable "RULES"`) {
		t.Fatalf("error %v", err)
	}
	if errs := p.engine.messages(pulumirpc.LogSeverity_ERROR); len(errs) != 1 || !strings.Contains(errs[0], "'RULES'") {
		t.Fatalf("logged errors %q", errs)
	}
	if len(server.envs) != 0 {
		t.Fatal("the command ran although its environment could not be set")
	}
}

// remote/commandOutputs.go: PULUMI_COMMAND_STDOUT/STDERR are offered the same way, but a refusal
// is only a warning and the command runs without them.
func TestRefusedPreviousOutputIsAWarning(t *testing.T) {
	server := startSSHServer(t, false)
	p := startProvider(t)
	r := p.life(typeRemoteCommand)
	must(t, r.create(remoteInputs(server, map[string]any{"create": "echo one"})))
	_, err := r.update(remoteInputs(server, map[string]any{"create": `echo "prev=[$PULUMI_COMMAND_STDOUT]"`}))
	must(t, err)
	if got := str(r.outputs, "stdout"); got != "prev=[]" {
		t.Fatalf("stdout %q", got)
	}
	if warnings := p.engine.messages(pulumirpc.LogSeverity_WARNING); len(warnings) != 1 ||
		!strings.Contains(warnings[0], "'PULUMI_COMMAND_STDOUT'") {
		t.Fatalf("warnings %q", warnings)
	}
}

// remote/commandOutputs.go and local/run.go: with AcceptEnv the previous stdout/stderr reach the
// update and delete commands; outputs lose one trailing newline.
func TestRemoteLifecycleWithAcceptEnv(t *testing.T) {
	server := startSSHServer(t, true)
	log := filepath.Join(t.TempDir(), "log")
	p := startProvider(t)
	r := p.life(typeRemoteCommand)
	in := func(create string) resource.PropertyMap {
		return remoteInputs(server, map[string]any{"create": create, "stdin": "in\n",
			"environment": map[string]any{"RULES": `it's "quoted" $HOME`},
			"delete":      `echo "delete prev=$PULUMI_COMMAND_STDOUT" >> ` + log})
	}
	must(t, r.create(in(`read x; echo "got $x [$RULES]"`)))
	if got := str(r.outputs, "stdout"); got != `got in [it's "quoted" $HOME]` {
		t.Fatalf("stdout %q", got)
	}
	_, err := r.update(in(`echo "second prev=$PULUMI_COMMAND_STDOUT"`))
	must(t, err)
	must(t, r.delete())
	b, _ := os.ReadFile(log)
	if !strings.Contains(string(b), "delete prev=second prev=got in") {
		t.Fatalf("delete log %q", b)
	}
}

// remote/commandOutputs.go: the SSH client a command dialed is never closed; the connection stays
// until the provider exits.
func TestRemoteCommandLeavesItsConnectionOpen(t *testing.T) {
	server := startSSHServer(t, true)
	p := startProvider(t)
	_, err := p.create(typeRemoteCommand, p.check(typeRemoteCommand, remoteInputs(server, map[string]any{"create": "true"})), false)
	must(t, err)
	time.Sleep(200 * time.Millisecond)
	if n := server.open.Load(); n != 1 {
		t.Fatalf("%d connections open after the command, want 1", n)
	}
}

// remote/connection.go (dialWithRetry) on pulumi/sdk go/common/util/retry: dialErrorLimit failed
// dials are tolerated, pauses start at 100 ms and grow 1.5x, each failure is a status line.
func TestDialBackoff(t *testing.T) {
	server := startSSHServer(t, true)
	p := startProvider(t)
	conn := pm(server.connMap())
	conn["port"], conn["dialErrorLimit"] = resource.NewProperty(float64(refusedPort(t))), resource.NewProperty(4.0)
	in := pm(map[string]any{"create": "true"})
	in["connection"] = resource.NewProperty(conn)
	started := time.Now()
	_, err := p.create(typeRemoteCommand, p.check(typeRemoteCommand, in), false)
	elapsed := time.Since(started)
	if err == nil || !strings.Contains(err.Error(), "after 4 failed attempts:") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error %v", err)
	}
	// 0.1 + 0.15 + 0.225 + 0.3375 s of pauses between 5 dials
	if elapsed < 750*time.Millisecond || elapsed > 2*time.Second {
		t.Fatalf("5 dials took %v, want about 0.81 s", elapsed)
	}
	status := p.engine.messages(pulumirpc.LogSeverity_INFO)
	want := []string{"Dial 1/4 failed: retrying", "Dial 2/4 failed: retrying", "Dial 3/4 failed: retrying", "Dial 4/4 failed: retrying"}
	if strings.Join(status, "|") != strings.Join(want, "|") {
		t.Fatalf("status lines %q", status)
	}
}

// remote/connection.go (SSHConfig): perDialTimeout becomes ssh.ClientConfig.Timeout, which bounds
// the TCP connect only; a host that accepts but does not speak SSH holds the dial until it hangs up.
func TestPerDialTimeoutCoversOnlyTheTCPConnect(t *testing.T) {
	server := startSSHServer(t, true)
	hold := 2 * time.Second
	port := silentServer(t, hold)
	p := startProvider(t)
	conn := pm(server.connMap())
	conn["port"], conn["perDialTimeout"], conn["dialErrorLimit"] = resource.NewProperty(float64(port)),
		resource.NewProperty(1.0), resource.NewProperty(0.0)
	in := pm(map[string]any{"create": "true"})
	in["connection"] = resource.NewProperty(conn)
	started := time.Now()
	_, err := p.create(typeRemoteCommand, p.check(typeRemoteCommand, in), false)
	if err == nil || !strings.Contains(err.Error(), "after 0 failed attempts: ssh: handshake failed") {
		t.Fatalf("error %v", err)
	}
	if elapsed := time.Since(started); elapsed < hold-200*time.Millisecond {
		t.Fatalf("the dial gave up after %v: the 1 s timeout must not cover the handshake", elapsed)
	}
}

// remote/connection.go (SSHConfig): with hostKey only the key's own type is offered as host key
// algorithm; for an RSA key that is "ssh-rsa", which servers refusing SHA-1 (OpenSSH >= 8.8) reject.
func TestHostKeyOffersOnlyItsOwnAlgorithm(t *testing.T) {
	server := startSSHServerWithHostKey(t, true, rsaHostSigner(t))
	p := startProvider(t)
	in := remoteInputs(server, map[string]any{"create": "true"})
	_, err := p.create(typeRemoteCommand, p.check(typeRemoteCommand, in), false)
	if err == nil || !strings.Contains(err.Error(), "no common algorithm for host key") {
		t.Fatalf("error %v", err)
	}
	ed := startSSHServer(t, true)
	other := startSSHServer(t, true)
	conn := pm(ed.connMap())
	conn["hostKey"], conn["dialErrorLimit"] = pm(other.connMap())["hostKey"], resource.NewProperty(0.0)
	in = pm(map[string]any{"create": "true"})
	in["connection"] = resource.NewProperty(conn)
	if _, err := p.create(typeRemoteCommand, p.check(typeRemoteCommand, in), false); err == nil ||
		!strings.Contains(err.Error(), "host key mismatch") {
		t.Fatalf("another host's key: %v", err)
	}
}

// remote/connection_unix.go and connection.go (SSHConfig): SSH_AUTH_SOCK, when set, is dialed
// before connecting; a stale one (the SSH session that set it is gone) fails every remote step
// at once, before any dial to the host.
func TestStaleAgentSocketFailsEveryRemoteStep(t *testing.T) {
	server := startSSHServer(t, true)
	p := startProvider(t, "SSH_AUTH_SOCK="+filepath.Join(t.TempDir(), "gone.sock"))
	_, err := p.create(typeRemoteCommand, p.check(typeRemoteCommand, remoteInputs(server, map[string]any{"create": "true"})), false)
	if err == nil || !strings.Contains(err.Error(), "gone.sock") {
		t.Fatalf("error %v", err)
	}
	if n := server.connections.Load(); n != 0 {
		t.Fatalf("%d dials to the host: the failure must come first", n)
	}
}

// remote/copyController.go (copyFile: sftp Create, no chmod; sftpCopy: MkdirAll): copied files get
// the SFTP server's default mode (0644), whatever their local mode, and missing parents are made.
func TestCopiedFilesGetTheServersDefaultMode(t *testing.T) {
	server := startSSHServer(t, true)
	src, dst := t.TempDir(), t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "hlfw"), []byte("#!/bin/sh\n"), 0o750))
	a, err := asset.FromPath(filepath.Join(src, "hlfw"))
	must(t, err)
	p := startProvider(t)
	in := remoteInputs(server, map[string]any{"remotePath": filepath.Join(dst, "new", "dir", "hlfw")})
	in["source"] = resource.NewAssetProperty(a)
	_, err = p.create(typeCopyToRemote, p.check(typeCopyToRemote, in), false)
	must(t, err)
	info, err := os.Stat(filepath.Join(dst, "new", "dir", "hlfw"))
	must(t, err)
	if info.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", info.Mode())
	}
}

// remote/copyController.go (Update) with pulumi-go-provider infer/resource.go (diff): a changed
// trigger element is an in-place update (only a whole added or removed `triggers` replaces), and
// Update copies again only when the source's hash or remotePath changed. The Python SDK adds
// replace_on_changes for triggers to Command resources, not to CopyToRemote: there a new trigger
// value alone (e.g. a replaced server at the same address) copies nothing.
func TestCopyToRemoteCopiesAgainOnlyForNewContentOrPath(t *testing.T) {
	server := startSSHServer(t, true)
	src, dst := t.TempDir(), t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("release"), 0o644))
	a, err := asset.FromPath(filepath.Join(src, "f"))
	must(t, err)
	p := startProvider(t)
	in := func(trigger, user string) resource.PropertyMap {
		m := remoteInputs(server, map[string]any{"remotePath": filepath.Join(dst, "f"), "triggers": []any{trigger}})
		m["source"] = resource.NewAssetProperty(a)
		if user != "" {
			conn := pm(server.connMap())
			conn["user"] = resource.NewProperty(user)
			m["connection"] = resource.NewProperty(conn)
		}
		return m
	}
	r := p.life(typeCopyToRemote)
	must(t, r.create(in("server-1", "")))
	must(t, os.Remove(filepath.Join(dst, "f")))
	d, err := r.update(in("server-2", "other"))
	must(t, err)
	if d.GetChanges() != pulumirpc.DiffResponse_DIFF_SOME || len(d.GetReplaces()) != 0 ||
		d.GetDetailedDiff()["triggers[0]"].GetKind() != pulumirpc.PropertyDiff_UPDATE {
		t.Fatalf("diff %s", renderDiff(d))
	}
	if _, err := os.Stat(filepath.Join(dst, "f")); !os.IsNotExist(err) {
		t.Fatal("the update copied although neither the source nor remotePath changed")
	}
}

// remote/copyfileController.go implements no Update, so pulumi-go-provider's infer diff makes
// every change of the deprecated CopyFile a replacement.
func TestCopyFileReplacesOnEveryChange(t *testing.T) {
	p := startProvider(t)
	old := p.check(typeCopyFile, pm(map[string]any{"connection": map[string]any{"host": "h"}, "localPath": "/a", "remotePath": "/b"}))
	news := p.check(typeCopyFile, pm(map[string]any{"connection": map[string]any{"host": "h"}, "localPath": "/a", "remotePath": "/c"}))
	d := p.diff(typeCopyFile, "id", old, old, news)
	if strings.Join(d.GetReplaces(), ",") != "remotePath" {
		t.Fatalf("diff %s", renderDiff(d))
	}
}

// local/commandController.go: update runs `update`, else `create`, with the previous stdout in
// PULUMI_COMMAND_STDOUT; with neither it keeps the previous outputs. In a preview of an update,
// stdout is unknown (pulumi-go-provider infer/resource.go, markComputed).
func TestLocalUpdate(t *testing.T) {
	p := startProvider(t)
	r := p.life(typeLocalCommand)
	must(t, r.create(pm(map[string]any{"create": "echo one"})))
	next := p.check(typeLocalCommand, pm(map[string]any{"create": `echo "two prev=$PULUMI_COMMAND_STDOUT"`}))
	preview, err := p.update(typeLocalCommand, r.id, r.inputs, r.outputs, next, true)
	must(t, err)
	if render(preview["stdout"]) != "unknown" {
		t.Fatalf("preview stdout %s", render(preview["stdout"]))
	}
	_, err = r.update(pm(map[string]any{"create": `echo "two prev=$PULUMI_COMMAND_STDOUT"`}))
	must(t, err)
	if got := str(r.outputs, "stdout"); got != "two prev=one" {
		t.Fatalf("stdout %q", got)
	}
	_, err = r.update(pm(map[string]any{"delete": "true"}))
	must(t, err)
	if got := str(r.outputs, "stdout"); got != "two prev=one" {
		t.Fatalf("without a command the outputs must stay: %q", got)
	}
}

// local/run.go: a failed command's error is "<exit status>: running <command quoted>:" and its
// combined output; the command is shown as given, even when it is a secret input (upstream
// decodes inputs without their secretness), so never put a secret in the command text.
func TestFailureNamesTheCommandAndItsOutput(t *testing.T) {
	p := startProvider(t)
	in := resource.PropertyMap{"create": resource.MakeSecret(resource.NewProperty("echo boom; exit 3"))}
	_, err := p.create(typeLocalCommand, p.check(typeLocalCommand, in), false)
	if err == nil || !strings.Contains(err.Error(), "exit status 3: running \"echo boom; exit 3\":\nboom") {
		t.Fatalf("error %v", err)
	}
}

// local/run.go (globAssets): assetPaths selects files relative to dir, `!` excludes, `*` stops at
// `/`; the result is the `assets` output.
func TestLocalAssetPaths(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	for _, f := range []string{"a.sh", "sub/b.sh", "sub/secret.sh"} {
		must(t, os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644))
	}
	p := startProvider(t)
	res, err := p.create(typeLocalCommand, p.check(typeLocalCommand, pm(map[string]any{"create": "true", "dir": dir,
		"assetPaths": []any{"*.sh", "sub/**", "!**secret*"}})), false)
	must(t, err)
	assets := res.outputs["assets"].ObjectValue()
	if got := strings.Join(func() []string {
		var keys []string
		for _, k := range assets.StableKeys() {
			keys = append(keys, string(k))
		}
		return keys
	}(), ","); got != "a.sh,sub/b.sh" {
		t.Fatalf("assets %s", got)
	}
}

// The schema this build serves is valid JSON for the same package.
func TestSchemaIsJSON(t *testing.T) {
	p := startProvider(t)
	resp, err := p.client.GetSchema(context.Background(), &pulumirpc.GetSchemaRequest{})
	must(t, err)
	var schema struct {
		Name      string         `json:"name"`
		Resources map[string]any `json:"resources"`
	}
	must(t, json.Unmarshal([]byte(resp.GetSchema()), &schema))
	if schema.Name != "command" || schema.Resources[typeCopyToRemote] == nil {
		t.Fatalf("schema %s...", resp.GetSchema()[:200])
	}
}
