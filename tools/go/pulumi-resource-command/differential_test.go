package main

// Differential tests: the same requests to this module's build and to HL_COMMAND_PROVIDER (e.g.
// upstream pulumi-command v1.2.1 built from its source), answer by answer. They run only when
// HL_COMMAND_PROVIDER names another binary; every difference they find is a bug here.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/archive"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/asset"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// render writes a property value canonically: map keys sorted, secrets and unknowns spelled out.
func render(v resource.PropertyValue) string {
	switch {
	case v.IsNull():
		return "null"
	case v.IsSecret():
		return "secret(" + render(v.SecretValue().Element) + ")"
	case v.IsComputed():
		return "unknown"
	case v.IsOutput():
		o := v.OutputValue()
		inner := "unknown"
		if o.Known {
			inner = render(o.Element)
		}
		if o.Secret {
			return "secret(" + inner + ")"
		}
		return inner
	case v.IsAsset():
		a := v.AssetValue()
		return fmt.Sprintf("asset(%s path=%s text=%q)", a.Hash, a.Path, a.Text)
	case v.IsArchive():
		return fmt.Sprintf("archive(%s path=%s)", v.ArchiveValue().Hash, v.ArchiveValue().Path)
	case v.IsArray():
		parts := []string{}
		for _, e := range v.ArrayValue() {
			parts = append(parts, render(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case v.IsObject():
		return renderMap(v.ObjectValue())
	case v.IsString():
		return fmt.Sprintf("%q", v.StringValue())
	}
	return fmt.Sprintf("%v", v.V)
}

func renderMap(m resource.PropertyMap) string {
	parts := []string{}
	for _, k := range m.StableKeys() {
		parts = append(parts, string(k)+": "+render(m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func renderDiff(d *pulumirpc.DiffResponse) string {
	keys := []string{}
	for k, v := range d.GetDetailedDiff() {
		keys = append(keys, fmt.Sprintf("%s=%s", k, v.GetKind()))
	}
	sort.Strings(keys)
	diffs, replaces := append([]string{}, d.GetDiffs()...), append([]string{}, d.GetReplaces()...)
	sort.Strings(diffs)
	sort.Strings(replaces)
	return fmt.Sprintf("changes=%s diffs=%v replaces=%v detailed=%v hasDetailed=%v deleteBeforeReplace=%v",
		d.GetChanges(), diffs, replaces, keys, d.GetHasDetailedDiff(), d.GetDeleteBeforeReplace())
}

var (
	hexID      = regexp.MustCompile(`\b(res)?[0-9a-f]{8}\b`)
	whitespace = regexp.MustCompile(`\s+`)
	localPort  = regexp.MustCompile(`127\.0\.0\.1:\d+->`)
	// Messages this build words on its own (same meaning, same place): compared by what they say.
	ownWording = []struct {
		pattern *regexp.Regexp
		meaning string
	}{
		{regexp.MustCompile(`Unable to set '(\w+)'.*`), "Unable to set '$1' <why and how to fix>"},
		{regexp.MustCompile(`(failed to stat|stat of) remote path`), "<stat of> remote path"},
		{regexp.MustCompile(`is a directory[;:] (when using|with) a text asset, remotePath must (be a file path|name a file)`),
			"is a directory <text asset needs a file path>"},
		{regexp.MustCompile(`offered: \[(.*?)\], peer offered: \[(.*?)\]`), "offered: <algorithms>"},
	}
)

// scenario records what a provider answers; its lines are compared between two providers.
type scenario struct {
	t     *testing.T
	p     *prov
	root  string // a directory of this provider's run (copies land here)
	lines []string
}

func (s *scenario) note(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	line = strings.ReplaceAll(line, s.root, "<root>")
	line = hexID.ReplaceAllString(line, "${1}<hex8>")
	line = localPort.ReplaceAllString(line, "127.0.0.1:<port>->")
	for _, w := range ownWording {
		line = w.pattern.ReplaceAllString(line, w.meaning)
	}
	s.lines = append(s.lines, whitespace.ReplaceAllString(line, " "))
}

func (s *scenario) noteErr(label string, err error) {
	if err == nil {
		s.note("%s: ok", label)
		return
	}
	s.note("%s: error %s", label, err)
}

// noteLogs records (and forgets) what the provider logged since the last call.
func (s *scenario) noteLogs(label string) {
	s.p.engine.mu.Lock()
	logs := s.p.engine.logs
	s.p.engine.logs = nil
	s.p.engine.mu.Unlock()
	lines := []string{}
	for _, l := range logs {
		if l.GetSeverity() == pulumirpc.LogSeverity_DEBUG {
			continue // debug text is a provider's own business
		}
		lines = append(lines, fmt.Sprintf("%s ephemeral=%v %q", l.GetSeverity(), l.GetEphemeral(), l.GetMessage()))
	}
	sort.Strings(lines)
	s.note("%s logs: %v", label, lines)
}

func (s *scenario) tree(label string) {
	var entries []string
	_ = filepath.Walk(s.root, func(p string, info os.FileInfo, err error) error {
		if err == nil && p != s.root {
			entries = append(entries, fmt.Sprintf("%s %s", info.Mode(), p))
		}
		return nil
	})
	s.note("%s tree: %v", label, entries)
}

// differential runs play against this build and HL_COMMAND_PROVIDER and compares their notes.
func differential(t *testing.T, play func(s *scenario), env ...string) {
	t.Helper()
	if providerPath == ownBuildPath {
		t.Skip("set HL_COMMAND_PROVIDER to another build of pulumi-resource-command to compare with it")
	}
	run := func(path string) []string {
		s := &scenario{t: t, p: startProviderAt(t, path, env...), root: t.TempDir()}
		play(s)
		return s.lines
	}
	ours, theirs := run(ownBuildPath), run(providerPath)
	for i := 0; i < len(ours) || i < len(theirs); i++ {
		var a, b string
		if i < len(ours) {
			a = ours[i]
		}
		if i < len(theirs) {
			b = theirs[i]
		}
		if a != b {
			t.Errorf("answer %d differs:\n  ours:     %s\n  upstream: %s", i, a, b)
		}
	}
}

func TestDifferentialCheck(t *testing.T) {
	differential(t, func(s *scenario) {
		cases := map[string]struct {
			typ string
			in  resource.PropertyMap
		}{
			"remote minimal": {typeRemoteCommand, pm(map[string]any{"create": "true", "connection": map[string]any{"host": "h"}})},
			"remote full": {typeRemoteCommand, pm(map[string]any{"create": "c", "update": "u", "delete": "d", "stdin": "i",
				"logging": "none", "environment": map[string]any{"A": "1"}, "addPreviousOutputInEnv": false, "triggers": []any{"x", 1.0},
				"connection": map[string]any{"host": "h", "port": 2222.0, "user": "u", "password": "pw", "privateKey": "k",
					"privateKeyPassword": "kp", "agentSocketPath": "/a", "hostKey": "ssh-ed25519 AAAA", "dialErrorLimit": -1.0,
					"perDialTimeout": 0.0, "proxy": map[string]any{"host": "p", "password": "ppw"}}})},
			"remote bad logging":   {typeRemoteCommand, pm(map[string]any{"logging": "loud", "connection": map[string]any{"host": "h"}})},
			"remote no connection": {typeRemoteCommand, pm(map[string]any{"create": 5.0})},
			"remote bad port":      {typeRemoteCommand, pm(map[string]any{"connection": map[string]any{"host": "h", "port": "x"}})},
			"remote no host":       {typeRemoteCommand, pm(map[string]any{"connection": map[string]any{"port": 2.0}})},
			"remote unknown field": {typeRemoteCommand, pm(map[string]any{"extra": "x", "connection": map[string]any{"host": "h"}})},
			"remote null env entry": {typeRemoteCommand, resource.PropertyMap{
				"connection":  resource.NewProperty(pm(map[string]any{"host": "h"})),
				"environment": resource.NewProperty(resource.PropertyMap{"A": resource.NewNullProperty(), "B": resource.NewProperty("b")}),
				"stdin":       resource.NewNullProperty()}},
			"remote secret parts": {typeRemoteCommand, resource.PropertyMap{
				"create": resource.MakeSecret(resource.NewProperty("c")),
				"connection": resource.NewProperty(resource.PropertyMap{"host": resource.NewProperty("h"),
					"privateKey": resource.MakeSecret(resource.NewProperty("k"))})}},
			"remote unknown connection": {typeRemoteCommand, resource.PropertyMap{"connection": resource.MakeComputed(resource.NewProperty(""))}},
			"remote unknown host": {typeRemoteCommand, resource.PropertyMap{"connection": resource.NewProperty(resource.PropertyMap{
				"host": resource.MakeComputed(resource.NewProperty(""))})}},
			"local empty": {typeLocalCommand, pm(map[string]any{})},
			"local full": {typeLocalCommand, pm(map[string]any{"create": "c", "interpreter": []any{"sh", "-c"}, "dir": "/d",
				"environment": map[string]any{"A": "1"}, "assetPaths": []any{"*"}, "archivePaths": []any{"**"}, "logging": "stderr"})},
			"local wrong types": {typeLocalCommand, pm(map[string]any{"interpreter": "sh", "environment": map[string]any{"A": 1.0},
				"addPreviousOutputInEnv": "yes"})},
			"copy no source": {typeCopyToRemote, pm(map[string]any{"connection": map[string]any{"host": "h"}, "remotePath": "/x"})},
			"copyfile": {typeCopyFile, pm(map[string]any{"connection": map[string]any{"host": "h"}, "remotePath": "/x",
				"localPath": "/y", "triggers": []any{"a"}})},
		}
		names := []string{}
		for name := range cases {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			out, failures := s.p.checkFailures(cases[name].typ, cases[name].in)
			sort.Strings(failures)
			s.note("%s: %s failures=%q", name, renderMap(out), failures)
		}
	})
}

func TestDifferentialRemoteCommand(t *testing.T) {
	for _, acceptEnv := range []bool{true, false} {
		t.Run(fmt.Sprintf("acceptEnv=%v", acceptEnv), func(t *testing.T) {
			server := startSSHServer(t, acceptEnv)
			differential(t, func(s *scenario) {
				openBefore := server.open.Load()
				r := s.p.life(typeRemoteCommand)
				in := func(create string, extra map[string]any) resource.PropertyMap {
					m := pm(map[string]any{"create": create, "stdin": "in\n"})
					for k, v := range extra {
						m[resource.PropertyKey(k)] = resource.NewPropertyValue(v)
					}
					m["connection"] = resource.NewProperty(pm(server.connMap()))
					return m
				}
				first := s.p.check(typeRemoteCommand, in(`read x; echo "got $x"; echo warn >&2`, nil))
				preview, err := s.p.create(typeRemoteCommand, first, true)
				s.noteErr("preview", err)
				s.note("preview id=%s outputs=%s", preview.id, renderMap(preview.outputs))
				s.noteErr("create", r.create(in(`read x; echo "got $x"; echo warn >&2`, nil)))
				s.note("create outputs=%s", renderMap(r.outputs))
				s.noteLogs("create")
				second := s.p.check(typeRemoteCommand, in(`echo "prev=$PULUMI_COMMAND_STDOUT"`, nil))
				up, err := s.p.update(typeRemoteCommand, r.id, r.inputs, r.outputs, second, true)
				s.noteErr("update preview", err)
				s.note("update preview outputs=%s", renderMap(up))
				d, err := r.update(in(`echo "prev=$PULUMI_COMMAND_STDOUT"`, nil))
				s.noteErr("update", err)
				s.note("update diff=%s outputs=%s", renderDiff(d), renderMap(r.outputs))
				s.noteLogs("update")
				d, err = r.update(in(`echo "prev=$PULUMI_COMMAND_STDOUT"`, map[string]any{"environment": map[string]any{"RULES": "v4"}}))
				s.noteErr("update with environment", err)
				s.note("update with environment diff=%s outputs=%s", renderDiff(d), renderMap(r.outputs))
				s.noteLogs("update with environment")
				d, err = r.update(in(`echo "prev=$PULUMI_COMMAND_STDOUT"`, map[string]any{"triggers": []any{"t1"}}))
				s.noteErr("add triggers", err)
				s.note("add triggers diff=%s", renderDiff(d))
				s.noteErr("delete", r.delete())
				failing := s.p.check(typeRemoteCommand, in("echo nope >&2; exit 7", map[string]any{"logging": "none"}))
				_, err = s.p.create(typeRemoteCommand, failing, false)
				s.noteErr("failing create", err)
				s.noteLogs("failing create")
				s.note("connections left open: %d", server.open.Load()-openBefore)
			})
		})
	}
}

func TestDifferentialLocalCommand(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "a.sh"), []byte("a"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "b.txt"), []byte("b"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "secret.txt"), []byte("s"), 0o644))
	differential(t, func(s *scenario) {
		r := s.p.life(typeLocalCommand)
		in := pm(map[string]any{"create": `echo "create $V $(pwd)"; echo err >&2`, "dir": dir,
			"environment": map[string]any{"V": "1"}, "assetPaths": []any{"*.sh", "sub/**", "!**secret*"},
			"archivePaths": []any{"**/*.txt"}, "update": `echo "update prev=$PULUMI_COMMAND_STDOUT"`,
			"delete": `echo "delete prev=$PULUMI_COMMAND_STDOUT"`})
		s.noteErr("create", r.create(in))
		s.note("create outputs=%s", renderMap(r.outputs))
		s.noteLogs("create")
		in2 := in.Copy()
		in2["environment"] = resource.NewProperty(pm(map[string]any{"V": "2"}))
		d, err := r.update(in2)
		s.noteErr("update", err)
		s.note("update diff=%s outputs=%s", renderDiff(d), renderMap(r.outputs))
		s.noteErr("delete", r.delete())
		s.noteLogs("delete")

		none := s.p.life(typeLocalCommand)
		s.noteErr("no create", none.create(pm(map[string]any{})))
		s.note("no create outputs=%s", renderMap(none.outputs))
		secretCmd := resource.PropertyMap{"create": resource.MakeSecret(resource.NewProperty("echo hidden; exit 3"))}
		_, err = s.p.create(typeLocalCommand, s.p.check(typeLocalCommand, secretCmd), false)
		s.noteErr("failing secret command", err)
		_, err = s.p.create(typeLocalCommand, s.p.check(typeLocalCommand, pm(map[string]any{"create": "x",
			"interpreter": []any{"/nonexistent/interpreter"}})), false)
		s.noteErr("missing interpreter", err)
		secretEnv := resource.PropertyMap{"create": resource.NewProperty("echo $S"),
			"environment": resource.MakeSecret(resource.NewProperty(pm(map[string]any{"S": "s3cr3t"})))}
		res, err := s.p.create(typeLocalCommand, s.p.check(typeLocalCommand, secretEnv), false)
		s.noteErr("secret environment", err)
		s.note("secret environment outputs=%s", renderMap(res.outputs))
		s.noteLogs("rest")
	})
}

func TestDifferentialCopies(t *testing.T) {
	server := startSSHServer(t, true)
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o750))
	must(t, os.MkdirAll(filepath.Join(src, "bundle", "sub"), 0o700))
	must(t, os.WriteFile(filepath.Join(src, "bundle", "sub", "f"), []byte("f"), 0o600))
	fileAsset, err := asset.FromPath(filepath.Join(src, "run.sh"))
	must(t, err)
	dirArchive, err := archive.FromPath(filepath.Join(src, "bundle"))
	must(t, err)
	dirEntries, err := archive.FromPath(filepath.Join(src, "bundle") + "/")
	must(t, err)
	text, err := asset.FromText("hello")
	must(t, err)
	differential(t, func(s *scenario) {
		copyInputs := func(source resource.PropertyValue, remote string, triggers ...any) resource.PropertyMap {
			m := pm(map[string]any{"remotePath": filepath.Join(s.root, remote)})
			if len(triggers) > 0 {
				m["triggers"] = resource.NewPropertyValue(triggers)
			}
			m["source"] = source
			m["connection"] = resource.NewProperty(pm(server.connMap()))
			return m
		}
		must(t, os.MkdirAll(filepath.Join(s.root, "existing"), 0o755))
		must(t, os.WriteFile(filepath.Join(s.root, "afile"), []byte("x"), 0o644))
		cases := []struct {
			name string
			in   resource.PropertyMap
		}{
			{"file to a new nested path", copyInputs(resource.NewAssetProperty(fileAsset), "new/nested/run.sh")},
			{"file into a directory", copyInputs(resource.NewAssetProperty(fileAsset), "existing")},
			{"dir to a missing path", copyInputs(resource.NewArchiveProperty(dirArchive), "missing/deeper")},
			{"dir into a directory", copyInputs(resource.NewArchiveProperty(dirArchive), "existing")},
			{"dir entries", copyInputs(resource.NewArchiveProperty(dirEntries), "entries")},
			{"dir onto a file", copyInputs(resource.NewArchiveProperty(dirArchive), "afile")},
			{"text", copyInputs(resource.NewAssetProperty(text), "texts/t.txt")},
			{"text onto a directory", copyInputs(resource.NewAssetProperty(text), "existing")},
		}
		for _, c := range cases {
			checked := s.p.check(typeCopyToRemote, c.in)
			preview, err := s.p.create(typeCopyToRemote, checked, true)
			s.noteErr(c.name+" preview", err)
			s.note("%s preview id=%q outputs=%s", c.name, preview.id, renderMap(preview.outputs))
			res, err := s.p.create(typeCopyToRemote, checked, false)
			s.noteErr(c.name, err)
			s.note("%s id=%q outputs=%s", c.name, res.id, renderMap(res.outputs))
		}
		s.tree("after creates")
		s.noteLogs("creates")

		r := s.p.life(typeCopyToRemote)
		must(t, r.create(copyInputs(resource.NewAssetProperty(fileAsset), "updated/run.sh", "t1")))
		must(t, os.WriteFile(filepath.Join(s.root, "updated", "run.sh"), []byte("edited on the host"), 0o644))
		d, err := r.update(copyInputs(resource.NewAssetProperty(fileAsset), "updated/run.sh", "t2"))
		s.noteErr("trigger changed", err)
		content, _ := os.ReadFile(filepath.Join(s.root, "updated", "run.sh"))
		s.note("trigger changed diff=%s content=%q", renderDiff(d), content)
		newConn := copyInputs(resource.NewAssetProperty(fileAsset), "updated/run.sh", "t2")
		conn := pm(server.connMap())
		conn["user"] = resource.NewProperty("someone-else")
		newConn["connection"] = resource.NewProperty(conn)
		checked := s.p.check(typeCopyToRemote, newConn)
		up, err := s.p.update(typeCopyToRemote, r.id, r.inputs, r.outputs, checked, true)
		s.noteErr("update preview", err)
		s.note("update preview outputs=%s", renderMap(up))
		d, err = r.update(newConn)
		s.noteErr("connection changed", err)
		content, _ = os.ReadFile(filepath.Join(s.root, "updated", "run.sh"))
		s.note("connection changed diff=%s content=%q", renderDiff(d), content)
		d, err = r.update(copyInputs(resource.NewAssetProperty(fileAsset), "updated/again.sh", "t2"))
		s.noteErr("remote path changed", err)
		s.note("remote path changed diff=%s", renderDiff(d))
		s.tree("after updates")

		cf := s.p.life(typeCopyFile)
		cfIn := pm(map[string]any{"localPath": filepath.Join(src, "run.sh"), "remotePath": filepath.Join(s.root, "cf.sh")})
		cfIn["connection"] = resource.NewProperty(pm(server.connMap()))
		s.noteErr("copyfile", cf.create(cfIn))
		cfIn2 := cfIn.Copy()
		cfIn2["remotePath"] = resource.NewProperty(filepath.Join(s.root, "cf2.sh"))
		d = s.p.diff(typeCopyFile, cf.id, cf.inputs, cf.outputs, s.p.check(typeCopyFile, cfIn2))
		s.note("copyfile diff=%s", renderDiff(d))
		_, err = s.p.update(typeCopyFile, cf.id, cf.inputs, cf.outputs, s.p.check(typeCopyFile, cfIn2), false)
		s.noteErr("copyfile update", err)
		cfMissing := cfIn.Copy()
		cfMissing["remotePath"] = resource.NewProperty(filepath.Join(s.root, "no", "such", "dir", "cf.sh"))
		_, err = s.p.create(typeCopyFile, s.p.check(typeCopyFile, cfMissing), false)
		s.note("copyfile into a missing directory fails: %v", err != nil)
		s.tree("after copyfile")
	})
}

func TestDifferentialDialing(t *testing.T) {
	server := startSSHServer(t, true)
	rsaServer := startSSHServerWithHostKey(t, true, rsaHostSigner(t))
	other := startSSHServer(t, true)
	silent := silentServer(t, 1500*time.Millisecond)
	refused := refusedPort(t)
	cases := []struct {
		name string
		conn func() resource.PropertyMap
	}{
		{"refused", func() resource.PropertyMap {
			c := pm(server.connMap())
			c["port"], c["dialErrorLimit"] = resource.NewProperty(float64(refused)), resource.NewProperty(3.0)
			return c
		}},
		{"refused without retries", func() resource.PropertyMap {
			c := pm(server.connMap())
			c["port"], c["dialErrorLimit"] = resource.NewProperty(float64(refused)), resource.NewProperty(0.0)
			return c
		}},
		{"rsa host key", func() resource.PropertyMap {
			c := pm(rsaServer.connMap())
			c["dialErrorLimit"] = resource.NewProperty(0.0)
			return c
		}},
		{"other host key", func() resource.PropertyMap {
			c := pm(server.connMap())
			c["hostKey"], c["dialErrorLimit"] = pm(other.connMap())["hostKey"], resource.NewProperty(0.0)
			return c
		}},
		{"silent server", func() resource.PropertyMap {
			c := pm(server.connMap())
			c["port"], c["dialErrorLimit"], c["perDialTimeout"] = resource.NewProperty(float64(silent)),
				resource.NewProperty(0.0), resource.NewProperty(1.0)
			return c
		}},
		{"bad private key", func() resource.PropertyMap {
			c := pm(server.connMap())
			c["privateKey"] = resource.NewProperty("not a key")
			return c
		}},
		{"bad agent socket", func() resource.PropertyMap {
			c := pm(server.connMap())
			c["agentSocketPath"] = resource.NewProperty("/nonexistent/agent.sock")
			return c
		}},
	}
	differential(t, func(s *scenario) {
		for _, c := range cases {
			in := pm(map[string]any{"create": "echo ok"})
			in["connection"] = resource.NewProperty(c.conn())
			started := time.Now()
			_, err := s.p.create(typeRemoteCommand, s.p.check(typeRemoteCommand, in), false)
			elapsed := time.Since(started)
			s.noteErr(c.name, err)
			s.note("%s took about %.0f s", c.name, elapsed.Seconds())
			s.noteLogs(c.name)
		}
	})
}

// With a stale SSH_AUTH_SOCK in the provider's environment (a closed SSH session's agent), every
// remote operation fails before dialing.
func TestDifferentialStaleAgentSocket(t *testing.T) {
	server := startSSHServer(t, true)
	differential(t, func(s *scenario) {
		in := pm(map[string]any{"create": "echo ok"})
		in["connection"] = resource.NewProperty(pm(server.connMap()))
		_, err := s.p.create(typeRemoteCommand, s.p.check(typeRemoteCommand, in), false)
		s.noteErr("stale agent", err)
	}, "SSH_AUTH_SOCK=/tmp/hl-no-such-agent.sock")
}

func TestDifferentialInvoke(t *testing.T) {
	differential(t, func(s *scenario) {
		for _, args := range []resource.PropertyMap{
			pm(map[string]any{"command": "echo inv; echo e >&2"}),
			pm(map[string]any{"command": "exit 4"}),
			pm(map[string]any{"interpreter": "sh"}),
		} {
			resp, err := s.p.invoke(funcLocalRun, args)
			s.noteErr("invoke", err)
			if resp != nil {
				failures := []string{}
				for _, f := range resp.GetFailures() {
					failures = append(failures, f.GetProperty()+": "+f.GetReason())
				}
				sort.Strings(failures)
				s.note("invoke return=%s failures=%q", renderMap(mustUnmarshal(t, resp.GetReturn())), failures)
			}
		}
	})
}

// A stack deployed with one provider and previewed with the other shows no change: the inputs
// each records are the same, so the other's diff finds nothing (and no step runs again).
func TestStateFromOneProviderShowsNoDiffUnderTheOther(t *testing.T) {
	if providerPath == ownBuildPath {
		t.Skip("set HL_COMMAND_PROVIDER to another build of pulumi-resource-command to compare with it")
	}
	server := startSSHServer(t, true)
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "release"), []byte("rules"), 0o644))
	release, err := asset.FromPath(filepath.Join(src, "release"))
	must(t, err)
	resources := map[string]func(root string) resource.PropertyMap{
		typeRemoteCommand: func(string) resource.PropertyMap {
			in := remoteInputs(server, map[string]any{"create": "echo applied", "triggers": []any{"hash", "server-1"},
				"environment": map[string]any{"RELEASE": "hash"}, "logging": "stdout"})
			conn := pm(server.connMap())
			conn["privateKey"] = resource.MakeSecret(conn["privateKey"])
			in["connection"] = resource.NewProperty(conn)
			return in
		},
		typeLocalCommand: func(string) resource.PropertyMap {
			return resource.PropertyMap{"create": resource.NewProperty("echo confirmed"),
				"triggers":    resource.NewPropertyValue([]any{"hash"}),
				"environment": resource.NewProperty(resource.PropertyMap{"HL_SSH_KEY": resource.MakeSecret(resource.NewProperty("k"))})}
		},
		typeCopyToRemote: func(root string) resource.PropertyMap {
			in := remoteInputs(server, map[string]any{"remotePath": root, "triggers": []any{"hash"}})
			in["source"] = resource.NewAssetProperty(release)
			return in
		},
	}
	ours, theirs := startProviderAt(t, ownBuildPath), startProviderAt(t, providerPath)
	for _, pair := range [][2]*prov{{ours, theirs}, {theirs, ours}} {
		deployer, previewer := pair[0], pair[1]
		for typ, inputs := range resources {
			root := t.TempDir()
			r := deployer.life(typ)
			must(t, r.create(inputs(root)))
			news := previewer.check(typ, inputs(root))
			if d := previewer.diff(typ, r.id, r.inputs, r.outputs, news); d.GetChanges() != pulumirpc.DiffResponse_DIFF_NONE {
				t.Errorf("%s deployed by %s shows a change under %s: %s", typ, name(deployer), name(previewer), renderDiff(d))
			}
		}
	}
}

func name(p *prov) string {
	if p.path == ownBuildPath {
		return "this build"
	}
	return "HL_COMMAND_PROVIDER"
}

// The schemas declare the same properties: types, defaults, secrets, replaceOnChanges (the
// documentation text is upstream's own and left out here).
func TestDifferentialSchema(t *testing.T) {
	differential(t, func(s *scenario) {
		resp, err := s.p.client.GetSchema(context.Background(), &pulumirpc.GetSchemaRequest{})
		must(t, err)
		var schema struct {
			Resources map[string]struct {
				InputProperties map[string]map[string]any `json:"inputProperties"`
				RequiredInputs  []string                  `json:"requiredInputs"`
			} `json:"resources"`
			Types map[string]struct {
				Properties map[string]map[string]any `json:"properties"`
				Required   []string                  `json:"required"`
			} `json:"types"`
		}
		must(t, json.Unmarshal([]byte(resp.GetSchema()), &schema))
		strip := func(props map[string]map[string]any) string {
			for _, p := range props {
				delete(p, "description")
				delete(p, "deprecationMessage")
			}
			b, _ := json.Marshal(props)
			return string(b)
		}
		for _, name := range []string{typeLocalCommand, typeRemoteCommand, typeCopyToRemote, typeCopyFile} {
			r := schema.Resources[name]
			sort.Strings(r.RequiredInputs)
			s.note("%s inputs=%s required=%v", name, strip(r.InputProperties), r.RequiredInputs)
		}
		for _, name := range []string{"command:remote:Connection", "command:remote:ProxyConnection"} {
			typ := schema.Types[name]
			sort.Strings(typ.Required)
			s.note("%s properties=%s required=%v", name, strip(typ.Properties), typ.Required)
		}
	})
}
