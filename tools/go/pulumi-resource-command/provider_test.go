package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/archive"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/asset"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"golang.org/x/crypto/ssh"
)

func init() {
	dialRetryDelay = 20 * time.Millisecond
	dialRetryMaxDelay = 50 * time.Millisecond
}

var testLog = &engineLog{quiet: true}

func urnOf(typ, name string) resource.URN {
	return resource.NewURN("dev", "proj", "", tokens.Type(typ), name)
}

// lifecycle drives Check/Create/Update/Delete like the engine does.
type lifecycle struct {
	t     *testing.T
	p     *cmdProvider
	typ   string
	urn   resource.URN
	id    resource.ID
	state resource.PropertyMap
}

func newLifecycle(t *testing.T, typ string) *lifecycle {
	return &lifecycle{t: t, p: newProvider(testLog), typ: typ, urn: urnOf(typ, "res")}
}

func (l *lifecycle) check(in resource.PropertyMap) resource.PropertyMap {
	l.t.Helper()
	resp, err := l.p.Check(context.Background(), plugin.CheckRequest{URN: l.urn, Type: tokens.Type(l.typ), News: in})
	if err != nil || len(resp.Failures) > 0 {
		l.t.Fatalf("check: %v %v", err, resp.Failures)
	}
	return resp.Properties
}

func (l *lifecycle) create(in resource.PropertyMap) error {
	l.t.Helper()
	news := l.check(in)
	prev, err := l.p.Create(context.Background(), plugin.CreateRequest{URN: l.urn, Type: tokens.Type(l.typ),
		Properties: news, Preview: true})
	if err != nil {
		l.t.Fatalf("preview create: %v", err)
	}
	if l.typ == typeLocalCommand || l.typ == typeRemoteCommand {
		if !prev.Properties["stdout"].ContainsUnknowns() {
			l.t.Fatalf("stdout must be unknown in preview: %v", prev.Properties["stdout"])
		}
	}
	resp, err := l.p.Create(context.Background(), plugin.CreateRequest{URN: l.urn, Type: tokens.Type(l.typ),
		Properties: news})
	if err != nil {
		return err
	}
	l.id, l.state = resp.ID, resp.Properties
	return nil
}

func (l *lifecycle) update(in resource.PropertyMap) (plugin.DiffResult, error) {
	l.t.Helper()
	news := l.check(in)
	d, err := l.p.Diff(context.Background(), plugin.DiffRequest{URN: l.urn, Type: tokens.Type(l.typ), ID: l.id,
		OldOutputs: l.state, NewInputs: news})
	if err != nil {
		l.t.Fatal(err)
	}
	if d.Changes != plugin.DiffSome || len(d.ReplaceKeys) > 0 {
		return d, nil
	}
	resp, err := l.p.Update(context.Background(), plugin.UpdateRequest{URN: l.urn, Type: tokens.Type(l.typ),
		ID: l.id, OldOutputs: l.state, NewInputs: news})
	if err != nil {
		return d, err
	}
	l.state = resp.Properties
	return d, nil
}

func (l *lifecycle) delete() error {
	_, err := l.p.Delete(context.Background(), plugin.DeleteRequest{URN: l.urn, Type: tokens.Type(l.typ),
		ID: l.id, Outputs: l.state})
	return err
}

func str(m resource.PropertyMap, k resource.PropertyKey) string {
	s, _, _ := getString(m, k)
	return s
}

func TestLocalCommandLifecycle(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	l := newLifecycle(t, typeLocalCommand)
	in := func(create string) resource.PropertyMap {
		return pm(map[string]any{
			"create":      create,
			"update":      `echo "update prev=$PULUMI_COMMAND_STDOUT v=$V" | tee -a ` + log,
			"delete":      `echo "delete prev=$PULUMI_COMMAND_STDOUT" >> ` + log,
			"environment": map[string]any{"V": "1"},
			"dir":         dir,
			"stdin":       "from-stdin",
		})
	}
	if err := l.create(in(`read x; echo "create $x $V $(pwd)"; echo warn >&2`)); err != nil {
		t.Fatal(err)
	}
	if got, want := str(l.state, "stdout"), "create from-stdin 1 "+dir; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
	if got := str(l.state, "stderr"); got != "warn" {
		t.Fatalf("stderr %q", got)
	}
	if _, err := l.update(in(`echo changed`)); err != nil {
		t.Fatal(err)
	}
	if got, want := str(l.state, "stdout"), "update prev=create from-stdin 1 "+dir+" v=1"; got != want {
		t.Fatalf("update stdout %q, want %q", got, want)
	}
	if err := l.delete(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(log)
	if !strings.Contains(string(b), "delete prev=update prev=create") {
		t.Fatalf("delete did not see the previous stdout: %q", b)
	}
}

func TestLocalUpdateFallsBackToCreate(t *testing.T) {
	l := newLifecycle(t, typeLocalCommand)
	if err := l.create(pm(map[string]any{"create": "echo one"})); err != nil {
		t.Fatal(err)
	}
	if _, err := l.update(pm(map[string]any{"create": "echo two; echo prev=$PULUMI_COMMAND_STDOUT",
		"addPreviousOutputInEnv": false})); err != nil {
		t.Fatal(err)
	}
	if got := str(l.state, "stdout"); got != "two\nprev=" {
		t.Fatalf("stdout %q", got)
	}
}

func TestLocalFailureHidesSecretCommand(t *testing.T) {
	l := newLifecycle(t, typeLocalCommand)
	in := resource.PropertyMap{"create": resource.MakeSecret(resource.NewProperty("echo boom-out; exit 3 # hunter2"))}
	err := l.create(in)
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "boom-out") ||
		!strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("error: %v", err)
	}
}

func TestLocalInterpreter(t *testing.T) {
	l := newLifecycle(t, typeLocalCommand)
	if err := l.create(pm(map[string]any{"create": "print('py')", "interpreter": []any{"python3", "-c"}})); err != nil {
		t.Skipf("python3 not available: %v", err)
	}
	if got := str(l.state, "stdout"); got != "py" {
		t.Fatalf("stdout %q", got)
	}
}

func remoteInputs(s *testSSHServer, extra map[string]any) resource.PropertyMap {
	m := map[string]any{}
	for k, v := range extra {
		m[k] = v
	}
	in := pm(m)
	in["connection"] = resource.MakeSecret(resource.NewProperty(pm(s.connMap())))
	return in
}

func testRemoteLifecycle(t *testing.T, acceptEnv bool) {
	s := startSSHServer(t, acceptEnv)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	l := newLifecycle(t, typeRemoteCommand)
	in := func(create string) resource.PropertyMap {
		return remoteInputs(s, map[string]any{
			"create":      create,
			"delete":      `echo "delete prev=$PULUMI_COMMAND_STDOUT" >> ` + log,
			"environment": map[string]any{"RULES": "it's \"quoted\" $HOME"},
			"stdin":       "in\n",
			"logging":     "none",
		})
	}
	if err := l.create(in(`read x; echo "got $x [$RULES]"`)); err != nil {
		t.Fatal(err)
	}
	if got, want := str(l.state, "stdout"), `got in [it's "quoted" $HOME]`; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
	if !l.state["connection"].IsSecret() {
		t.Fatal("connection must stay secret")
	}
	if n := s.connections.Load(); n != 1 {
		t.Fatalf("connections after create: %d", n)
	}
	// A changed command is an in-place update that reruns create (no update command).
	d, err := l.update(in(`echo "second prev=$PULUMI_COMMAND_STDOUT"`))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.ReplaceKeys) != 0 {
		t.Fatalf("unexpected replace: %+v", d)
	}
	if got, want := str(l.state, "stdout"), `second prev=got in [it's "quoted" $HOME]`; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
	if err := l.delete(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(log)
	if !strings.Contains(string(b), "delete prev=second prev=got in") {
		t.Fatalf("delete log: %q", b)
	}
	// Every CRUD call used a new TCP connection.
	if n := s.connections.Load(); n != 3 {
		t.Fatalf("connections: %d, want 3", n)
	}
	env := strings.Join(s.lastEnv(), "\n")
	if acceptEnv != strings.Contains(env, "PULUMI_COMMAND_STDOUT=") {
		t.Fatalf("env via setenv (accept=%v): %q", acceptEnv, env)
	}
}

func TestRemoteCommandWithAcceptEnv(t *testing.T)    { testRemoteLifecycle(t, true) }
func TestRemoteCommandWithoutAcceptEnv(t *testing.T) { testRemoteLifecycle(t, false) }

func TestRemoteFailure(t *testing.T) {
	s := startSSHServer(t, true)
	l := newLifecycle(t, typeRemoteCommand)
	err := l.create(remoteInputs(s, map[string]any{"create": "echo nope >&2; exit 7"}))
	if err == nil || !strings.Contains(err.Error(), "exited with status 7") || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("error: %v", err)
	}
}

func TestRemoteHostKeyMismatch(t *testing.T) {
	s := startSSHServer(t, true)
	other := startSSHServer(t, true)
	conn := s.connMap()
	conn["hostKey"] = string(ssh.MarshalAuthorizedKey(other.hostKey))
	conn["dialErrorLimit"] = 0.0
	in := pm(map[string]any{"create": "true"})
	in["connection"] = resource.NewProperty(pm(conn))
	l := newLifecycle(t, typeRemoteCommand)
	if err := l.create(in); err == nil || !strings.Contains(err.Error(), "host key mismatch") {
		t.Fatalf("error: %v", err)
	}
}

func TestDialRetriesThenGivesUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close() // nothing listens: connection refused
	c := &connSpec{host: "127.0.0.1", port: port, user: "root", dialErrorLimit: 2, perDialTimeout: time.Second}
	start := time.Now()
	_, err = dial(context.Background(), c, testLog, "")
	if err == nil || !strings.Contains(err.Error(), "after 3 failed attempt") {
		t.Fatalf("error: %v", err)
	}
	// Two pauses between the three attempts: not back-to-back.
	if el := time.Since(start); el < 2*dialRetryDelay {
		t.Fatalf("retries too fast: %v", el)
	}
}

func TestDialUnlimitedRetriesStopWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	c := &connSpec{host: "127.0.0.1", port: port, user: "root", dialErrorLimit: -1, perDialTimeout: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = dial(ctx, c, testLog, "")
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("unlimited retries must run until the context ends: %v", err)
	}
}

func TestDialSucceedsOnceServerListens(t *testing.T) {
	s := startSSHServer(t, true)
	c, err := parseConnObject(pm(s.connMap()), true)
	if err != nil {
		t.Fatal(err)
	}
	client, err := dial(context.Background(), c, testLog, "")
	if err != nil {
		t.Fatal(err)
	}
	_ = client.Close()
	if c.String() != "tester@127.0.0.1:"+strconv.Itoa(s.port) || strings.Contains(c.String(), "PRIVATE") {
		t.Fatalf("String(): %q", c.String())
	}
}

func TestCopyToRemote(t *testing.T) {
	s := startSSHServer(t, true)
	src := t.TempDir()
	dst := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "bundle", "sub"), 0o755))
	must(os.WriteFile(filepath.Join(src, "bundle", "a.sh"), []byte("#!/bin/sh\necho a\n"), 0o750))
	must(os.WriteFile(filepath.Join(src, "bundle", "sub", "b.txt"), []byte("b"), 0o600))
	must(os.WriteFile(filepath.Join(src, "single.txt"), []byte("v1"), 0o644))

	fileAsset, err := asset.FromPath(filepath.Join(src, "single.txt"))
	must(err)
	dirArchive, err := archive.FromPath(filepath.Join(src, "bundle"))
	must(err)

	// FileAsset to a new path.
	l := newLifecycle(t, typeCopyToRemote)
	in := remoteInputs(s, map[string]any{"remotePath": filepath.Join(dst, "copied.txt")})
	in["source"] = resource.NewAssetProperty(fileAsset)
	must(l.create(in))
	if b, _ := os.ReadFile(filepath.Join(dst, "copied.txt")); string(b) != "v1" {
		t.Fatalf("copied file: %q", b)
	}

	// Changed content: an update that copies again.
	must(os.WriteFile(filepath.Join(src, "single.txt"), []byte("v2"), 0o644))
	fileAsset2, err := asset.FromPath(filepath.Join(src, "single.txt"))
	must(err)
	in2 := remoteInputs(s, map[string]any{"remotePath": filepath.Join(dst, "copied.txt")})
	in2["source"] = resource.NewAssetProperty(fileAsset2)
	d, err := l.update(in2)
	must(err)
	if d.Changes != plugin.DiffSome || len(d.ReplaceKeys) != 0 {
		t.Fatalf("diff: %+v", d)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "copied.txt")); string(b) != "v2" {
		t.Fatalf("updated file: %q", b)
	}

	// FileArchive of a directory into an existing directory: dst/bundle/...
	l2 := newLifecycle(t, typeCopyToRemote)
	in3 := remoteInputs(s, map[string]any{"remotePath": dst})
	in3["source"] = resource.NewArchiveProperty(dirArchive)
	must(l2.create(in3))
	st, err := os.Stat(filepath.Join(dst, "bundle", "a.sh"))
	must(err)
	if st.Mode().Perm() != 0o750 {
		t.Fatalf("mode not kept: %v", st.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "bundle", "sub", "b.txt")); string(b) != "b" {
		t.Fatalf("nested file: %q", b)
	}

	// Directory with a trailing slash: its entries go into remotePath itself.
	dirArchive2, err := archive.FromPath(filepath.Join(src, "bundle") + "/")
	must(err)
	l3 := newLifecycle(t, typeCopyToRemote)
	in4 := remoteInputs(s, map[string]any{"remotePath": filepath.Join(dst, "flat")})
	in4["source"] = resource.NewArchiveProperty(dirArchive2)
	must(l3.create(in4))
	if _, err := os.Stat(filepath.Join(dst, "flat", "sub", "b.txt")); err != nil {
		t.Fatal(err)
	}

	// A text asset.
	l4 := newLifecycle(t, typeCopyToRemote)
	text, err := asset.FromText("hello")
	must(err)
	in5 := remoteInputs(s, map[string]any{"remotePath": filepath.Join(dst, "text.txt")})
	in5["source"] = resource.NewAssetProperty(text)
	must(l4.create(in5))
	if b, _ := os.ReadFile(filepath.Join(dst, "text.txt")); string(b) != "hello" {
		t.Fatalf("text asset: %q", b)
	}

	// Delete leaves the files in place.
	must(l.delete())
	if _, err := os.Stat(filepath.Join(dst, "copied.txt")); err != nil {
		t.Fatal(err)
	}
}

func TestSetRemoteEnvFallback(t *testing.T) {
	refuse := refusingSession{}
	spec := runSpec{command: "run", env: map[string]string{"A": "x'y", "B": "2"}, addPrev: true,
		prevStdout: strings.Repeat("o", maxExportedPrev+1), prevStderr: "e"}
	cmd, err := setRemoteEnv(refuse, spec, testLog)
	if err != nil {
		t.Fatal(err)
	}
	want := `export A='x'"'"'y' B='2' PULUMI_COMMAND_STDERR='e'` + "\nrun"
	if cmd != want {
		t.Fatalf("command %q, want %q", cmd, want)
	}
	spec.env = map[string]string{"BAD-NAME": "1"}
	if _, err := setRemoteEnv(refuse, spec, testLog); err == nil {
		t.Fatal("want an error for an invalid variable name")
	}
}

type refusingSession struct{}

func (refusingSession) Setenv(string, string) error { return os.ErrPermission }

func TestReadReturnsState(t *testing.T) {
	p := newProvider(testLog)
	st := pm(map[string]any{"create": "x", "stdout": "o"})
	resp, err := p.Read(context.Background(), plugin.ReadRequest{URN: urnOf(typeLocalCommand, "r"),
		Type: typeLocalCommand, ID: "id1", State: st, Inputs: pm(map[string]any{"create": "x"})})
	if err != nil || resp.ID != "id1" || !resp.Outputs.DeepEquals(st) {
		t.Fatalf("read: %v %+v", err, resp)
	}
}

func TestPluginInfo(t *testing.T) {
	info, err := newProvider(testLog).GetPluginInfo(context.Background())
	if err != nil || info.Version.String() != "1.2.1" {
		t.Fatalf("%v %v", info.Version, err)
	}
}
