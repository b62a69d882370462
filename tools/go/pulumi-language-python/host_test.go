package main

import (
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

func TestParseFlags(t *testing.T) {
	f := parseFlags([]string{"--logtostderr", "-v=9", "--tracing", "file:///t", "-root", "/proj",
		"-virtualenv=venv", "-binary", "x", "-unknown=1", "-weird", "127.0.0.1:1234", "extra"})
	if f.engineAddress != "127.0.0.1:1234" || f.tracing != "file:///t" || f.verbose != 9 || !f.logToStderr {
		t.Fatalf("unexpected flags: %+v", f)
	}
	if f.legacy["root"] != "/proj" || f.legacy["virtualenv"] != "venv" {
		t.Fatalf("unexpected legacy flags: %v", f.legacy)
	}
}

func TestPluginVersionFromPEP440(t *testing.T) {
	for in, want := range map[string]string{
		"7.51.1": "7.51.1", "1.2": "1.2.0", "1.2.3a4": "1.2.3-alpha.4", "1.2.3b1": "1.2.3-beta.1",
		"1.2.3rc2": "1.2.3-rc.2", "1.2.3.post4": "1.2.3+post4", "1.2.3.dev5": "1.2.3+dev5",
		"1.2.3.post4.dev5": "1.2.3+post4dev5",
	} {
		if got, err := pluginVersionFromPEP440(in); err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1!2.0", "1.0+local", "abc"} {
		if _, err := pluginVersionFromPEP440(bad); err == nil {
			t.Errorf("%q: expected an error", bad)
		}
	}
}

func TestPackageDependency(t *testing.T) {
	check := func(pkg pythonPackage, want *pulumirpc.PackageDependency) {
		t.Helper()
		got := packageDependency(pkg)
		if (got == nil) != (want == nil) ||
			got != nil && (got.Name != want.Name || got.Version != want.Version || got.Server != want.Server) {
			t.Errorf("%s: got %v, want %v", pkg.Name, got, want)
		}
	}
	check(pythonPackage{Name: "pulumi-aws", Version: "7.51.1",
		Plugin: &plugin.PulumiPluginJSON{Resource: true, Name: "aws", Version: "7.51.1"}},
		&pulumirpc.PackageDependency{Name: "aws", Version: "v7.51.1"})
	check(pythonPackage{Name: "pulumi-foo", Version: "1.0",
		Plugin: &plugin.PulumiPluginJSON{Resource: true, Server: "https://example.invalid"}},
		&pulumirpc.PackageDependency{Name: "foo", Version: "v1.0.0", Server: "https://example.invalid"})
	check(pythonPackage{Name: "pulumi-random", Version: "4.16.0"},
		&pulumirpc.PackageDependency{Name: "random", Version: "v4.16.0"})
	check(pythonPackage{Name: "pulumi-lib", Version: "1.0", Plugin: &plugin.PulumiPluginJSON{Resource: false}}, nil)
	check(pythonPackage{Name: "pulumi-policy", Version: "1.0"}, nil)
	check(pythonPackage{Name: "pulumi-x", Version: "1.0+local"}, nil)
}
