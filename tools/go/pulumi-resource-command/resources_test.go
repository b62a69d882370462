package main

import (
	"sort"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/asset"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

func pm(v map[string]any) resource.PropertyMap { return resource.NewPropertyMapFromMap(v) }

func secretConn(extra map[string]any) resource.PropertyValue {
	c := map[string]any{"host": "192.0.2.2", "privateKey": "KEY"}
	for k, v := range extra {
		c[k] = v
	}
	return resource.MakeSecret(resource.NewProperty(pm(c)))
}

func failureProps(fs []plugin.CheckFailure) []string {
	var out []string
	for _, f := range fs {
		out = append(out, string(f.Property))
	}
	sort.Strings(out)
	return out
}

func TestCheckRemoteAppliesDefaultsInsideSecret(t *testing.T) {
	news := resource.PropertyMap{"connection": secretConn(nil), "create": resource.NewProperty("true")}
	out, failures := checkInputs(typeRemoteCommand, news)
	if len(failures) != 0 {
		t.Fatalf("unexpected failures: %v", failures)
	}
	conn := out["connection"]
	if !conn.IsSecret() {
		t.Fatalf("connection lost its secret marker: %v", conn)
	}
	o := conn.SecretValue().Element.ObjectValue()
	want := map[resource.PropertyKey]resource.PropertyValue{
		"user": resource.NewProperty("root"), "port": resource.NewProperty(22.0),
		"dialErrorLimit": resource.NewProperty(10.0), "perDialTimeout": resource.NewProperty(15.0),
		"host": resource.NewProperty("192.0.2.2"), "privateKey": resource.NewProperty("KEY"),
	}
	for k, v := range want {
		if !o[k].DeepEquals(v) {
			t.Errorf("connection.%s = %v, want %v", k, o[k], v)
		}
	}
	if !out["addPreviousOutputInEnv"].DeepEquals(resource.NewProperty(true)) {
		t.Errorf("addPreviousOutputInEnv default not applied: %v", out["addPreviousOutputInEnv"])
	}
}

func TestCheckKeepsExplicitValues(t *testing.T) {
	news := resource.PropertyMap{
		"connection": secretConn(map[string]any{"user": "admin", "port": 2222.0, "dialErrorLimit": -1.0,
			"perDialTimeout": 3.0, "proxy": map[string]any{"host": "192.0.2.9"}}),
		"addPreviousOutputInEnv": resource.NewProperty(false),
	}
	out, failures := checkInputs(typeRemoteCommand, news)
	if len(failures) != 0 {
		t.Fatalf("unexpected failures: %v", failures)
	}
	c, err := parseConnection(out, "connection")
	if err != nil {
		t.Fatal(err)
	}
	if c.user != "admin" || c.port != 2222 || c.dialErrorLimit != -1 || c.perDialTimeout.Seconds() != 3 {
		t.Errorf("explicit values overwritten: %+v", c)
	}
	if c.proxy == nil || c.proxy.user != "root" || c.proxy.port != 22 || c.proxy.dialErrorLimit != 10 {
		t.Errorf("proxy defaults not applied: %+v", c.proxy)
	}
	if !out["addPreviousOutputInEnv"].DeepEquals(resource.NewProperty(false)) {
		t.Errorf("addPreviousOutputInEnv overwritten")
	}
}

func TestCheckFailures(t *testing.T) {
	cases := []struct {
		name string
		typ  string
		news resource.PropertyMap
		want []string
	}{
		{"remote without connection", typeRemoteCommand, pm(map[string]any{"create": "x"}), []string{"connection"}},
		{"connection without host", typeRemoteCommand,
			resource.PropertyMap{"connection": resource.NewProperty(pm(map[string]any{"user": "u"}))},
			[]string{"connection.host"}},
		{"bad logging", typeLocalCommand, pm(map[string]any{"logging": "loud"}), []string{"logging"}},
		{"assetPaths unsupported", typeLocalCommand, pm(map[string]any{"assetPaths": []any{"*.txt"}}),
			[]string{"assetPaths"}},
		{"empty assetPaths accepted", typeLocalCommand, pm(map[string]any{"assetPaths": []any{}}), nil},
		{"create must be a string", typeLocalCommand, pm(map[string]any{"create": 3.0}), []string{"create"}},
		{"bad host key", typeRemoteCommand, resource.PropertyMap{"connection": secretConn(
			map[string]any{"hostKey": "not a key"})}, []string{"connection.hostKey"}},
		{"copy without source and path", typeCopyToRemote, resource.PropertyMap{"connection": secretConn(nil)},
			[]string{"remotePath", "source"}},
		{"copy with a string source", typeCopyToRemote, resource.PropertyMap{"connection": secretConn(nil),
			"remotePath": resource.NewProperty("/tmp/x"), "source": resource.NewProperty("file.txt")},
			[]string{"source"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, failures := checkInputs(tc.typ, tc.news)
			got := failureProps(failures)
			if len(got) != len(tc.want) {
				t.Fatalf("failures %v (%v), want %v", got, failures, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("failures %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestCheckAcceptsUnknowns(t *testing.T) {
	news := resource.PropertyMap{
		"connection": resource.MakeComputed(resource.NewProperty("")),
		"create":     resource.MakeComputed(resource.NewProperty("")),
		"logging":    resource.MakeComputed(resource.NewProperty("")),
	}
	if _, failures := checkInputs(typeRemoteCommand, news); len(failures) != 0 {
		t.Fatalf("unknown inputs must pass Check during preview: %v", failures)
	}
}

func TestCheckCopyToRemoteWithAsset(t *testing.T) {
	a, err := asset.FromPath("resources_test.go")
	if err != nil {
		t.Fatal(err)
	}
	news := resource.PropertyMap{"connection": secretConn(nil), "remotePath": resource.NewProperty("/tmp/x"),
		"source": resource.NewAssetProperty(a)}
	if _, failures := checkInputs(typeCopyToRemote, news); len(failures) != 0 {
		t.Fatalf("unexpected failures: %v", failures)
	}
}

// state builds an old state: checked inputs plus outputs.
func state(t *testing.T, typ string, in resource.PropertyMap) resource.PropertyMap {
	t.Helper()
	checked, failures := checkInputs(typ, in.Copy())
	if len(failures) != 0 {
		t.Fatalf("check: %v", failures)
	}
	return commandOutputs(checked, resource.NewProperty("out"), resource.NewProperty("err"))
}

func checked(t *testing.T, typ string, in resource.PropertyMap) resource.PropertyMap {
	t.Helper()
	out, failures := checkInputs(typ, in.Copy())
	if len(failures) != 0 {
		t.Fatalf("check: %v", failures)
	}
	return out
}

func TestDiff(t *testing.T) {
	base := func() resource.PropertyMap {
		return resource.PropertyMap{
			"connection":  secretConn(nil),
			"create":      resource.NewProperty("apply"),
			"delete":      resource.NewProperty("undo"),
			"environment": resource.NewProperty(pm(map[string]any{"A": "1"})),
			"triggers":    resource.NewProperty([]resource.PropertyValue{resource.NewProperty("t1")}),
		}
	}
	olds := state(t, typeRemoteCommand, base())

	t.Run("no change", func(t *testing.T) {
		d := diffInputs(typeRemoteCommand, olds, checked(t, typeRemoteCommand, base()), nil)
		if d.Changes != plugin.DiffNone {
			t.Fatalf("want no changes, got %+v", d)
		}
	})
	t.Run("create change is an in-place update", func(t *testing.T) {
		n := base()
		n["create"] = resource.NewProperty("apply v2")
		d := diffInputs(typeRemoteCommand, olds, checked(t, typeRemoteCommand, n), nil)
		if d.Changes != plugin.DiffSome || len(d.ReplaceKeys) != 0 {
			t.Fatalf("want update without replace, got %+v", d)
		}
		if d.DetailedDiff["create"].Kind != plugin.DiffUpdate {
			t.Fatalf("detailed diff: %+v", d.DetailedDiff)
		}
	})
	t.Run("environment and connection changes are updates", func(t *testing.T) {
		n := base()
		n["environment"] = resource.NewProperty(pm(map[string]any{"A": "2"}))
		n["connection"] = secretConn(map[string]any{"port": 2222.0})
		d := diffInputs(typeRemoteCommand, olds, checked(t, typeRemoteCommand, n), nil)
		if d.Changes != plugin.DiffSome || len(d.ReplaceKeys) != 0 {
			t.Fatalf("want update without replace, got %+v", d)
		}
		if len(d.ChangedKeys) != 2 {
			t.Fatalf("changed keys %v", d.ChangedKeys)
		}
	})
	t.Run("trigger change replaces", func(t *testing.T) {
		n := base()
		n["triggers"] = resource.NewProperty([]resource.PropertyValue{resource.NewProperty("t2")})
		d := diffInputs(typeRemoteCommand, olds, checked(t, typeRemoteCommand, n), nil)
		if d.Changes != plugin.DiffSome || len(d.ReplaceKeys) != 1 || d.ReplaceKeys[0] != "triggers" {
			t.Fatalf("want replace on triggers, got %+v", d)
		}
		if d.DetailedDiff["triggers"].Kind != plugin.DiffUpdateReplace {
			t.Fatalf("detailed diff: %+v", d.DetailedDiff)
		}
	})
	t.Run("adding triggers replaces", func(t *testing.T) {
		o := base()
		delete(o, "triggers")
		d := diffInputs(typeRemoteCommand, state(t, typeRemoteCommand, o), checked(t, typeRemoteCommand, base()), nil)
		if len(d.ReplaceKeys) != 1 || d.DetailedDiff["triggers"].Kind != plugin.DiffAddReplace {
			t.Fatalf("want replace, got %+v", d)
		}
	})
	t.Run("removing delete is an update", func(t *testing.T) {
		n := base()
		delete(n, "delete")
		d := diffInputs(typeRemoteCommand, olds, checked(t, typeRemoteCommand, n), nil)
		if d.Changes != plugin.DiffSome || d.DetailedDiff["delete"].Kind != plugin.DiffDelete {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("ignoreChanges", func(t *testing.T) {
		n := base()
		n["create"] = resource.NewProperty("apply v2")
		d := diffInputs(typeRemoteCommand, olds, checked(t, typeRemoteCommand, n), []string{"create"})
		if d.Changes != plugin.DiffNone {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("unknown create during preview is a change", func(t *testing.T) {
		n := checked(t, typeRemoteCommand, base())
		n["create"] = resource.MakeComputed(resource.NewProperty(""))
		d := diffInputs(typeRemoteCommand, olds, n, nil)
		if d.Changes != plugin.DiffSome {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("outputs are not compared", func(t *testing.T) {
		o := olds.Copy()
		o["stdout"] = resource.NewProperty("something else")
		d := diffInputs(typeRemoteCommand, o, checked(t, typeRemoteCommand, base()), nil)
		if d.Changes != plugin.DiffNone {
			t.Fatalf("got %+v", d)
		}
	})
}

func TestCommandOutputsSecretness(t *testing.T) {
	in := checked(t, typeRemoteCommand, resource.PropertyMap{
		"connection": secretConn(nil), "create": resource.NewProperty("id"),
	})
	out := commandOutputs(in, resource.NewProperty("o"), resource.NewProperty("e"))
	if !out["connection"].IsSecret() {
		t.Error("connection must stay secret in the state")
	}
	if out["stdout"].IsSecret() || out["stderr"].IsSecret() {
		t.Error("stdout/stderr must not be secret just because the connection is")
	}
	in["create"] = resource.MakeSecret(resource.NewProperty("echo s3cret"))
	out = commandOutputs(in, resource.NewProperty("o"), resource.NewProperty("e"))
	if !out["stdout"].IsSecret() || !out["stderr"].IsSecret() || !out["create"].IsSecret() {
		t.Error("outputs of a secret command must be secret")
	}
}

func TestSchemaIsJSON(t *testing.T) {
	if len(schemaJSON()) < 100 {
		t.Fatal("schema too short")
	}
}
