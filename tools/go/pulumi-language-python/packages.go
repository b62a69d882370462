package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// listPulumiPackagesPy runs inside the program's interpreter and prints, as JSON, every installed distribution that
// is a Pulumi package: one that ships `<module>/pulumi-plugin.json` (the file generated SDKs carry to name their
// resource plugin), or whose name starts with "pulumi-". Reading the metadata directly is much faster than one
// `pip show` per package, and sees exactly what the program will import.
const listPulumiPackagesPy = `
import json, re, sys
from importlib import metadata

seen, found = set(), []
for dist in metadata.distributions():
    key = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
    if not key or key in seen:
        continue  # the first one on sys.path is the one that gets imported
    seen.add(key)
    modules = [key.replace("-", "_")] + (dist.read_text("top_level.txt") or "").split()
    spec = None
    for mod in modules:
        for fname in ("pulumi-plugin.json", "pulumiplugin.json"):
            try:
                with open(dist.locate_file(mod + "/" + fname)) as f:
                    spec = json.load(f)
                break
            except (OSError, ValueError):
                pass
        if spec is not None:
            break
    if spec is None and not key.startswith("pulumi-"):
        continue
    found.append({"name": key, "version": dist.version, "plugin": spec})
json.dump(found, sys.stdout)
`

// packagesWithoutPlugins are first-party Python packages known to need no resource plugin.
var packagesWithoutPlugins = map[string]bool{"pulumi-policy": true, "pulumi-esc-sdk": true}

type pythonPackage struct {
	Name    string                   `json:"name"`    // normalized: lower case, '-' separated
	Version string                   `json:"version"` // PEP 440
	Plugin  *plugin.PulumiPluginJSON `json:"plugin"`  // contents of pulumi-plugin.json, if any
}

// GetRequiredPackages reports the resource plugins (and parameterized packages) that the Python packages installed
// in the program's environment need, so the engine can check/install them before running the program.
func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	pkgs, err := h.requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: pkgs}, nil
}

// GetRequiredPlugins is the deprecated, plugin-only form of GetRequiredPackages, kept for older engines.
func (h *host) GetRequiredPlugins(ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	pkgs, err := h.requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	plugins := make([]*pulumirpc.PluginDependency, 0, len(pkgs))
	for _, p := range pkgs {
		plugins = append(plugins, &pulumirpc.PluginDependency{
			Name: p.Name, Kind: p.Kind, Version: p.Version, Server: p.Server, Checksums: p.Checksums,
		})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

func (h *host) requiredPackages(ctx context.Context, info *pulumirpc.ProgramInfo,
) ([]*pulumirpc.PackageDependency, error) {
	opts, err := h.pythonOptions(info)
	if err != nil {
		return nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}

	// Like upstream, a configured but missing virtualenv is created (and requirements installed) on first use.
	stdout, stderr, closeLog := h.engineLog(ctx)
	defer closeLog()
	const useLanguageVersionTools, showOutput = false, true
	if err := tc.EnsureVenv(ctx, opts.ProgramDir, useLanguageVersionTools, showOutput, stdout, stderr); err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err // explains how to create the virtualenv
	}

	cmd, err := tc.Command(ctx, "-c", listPulumiPackagesPy)
	if err != nil {
		return nil, err
	}
	var out, errOut bytes.Buffer
	cmd.Dir, cmd.Stdout, cmd.Stderr = opts.ProgramDir, &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("listing installed Python packages with %s: %w: %s",
			cmd.Path, err, strings.TrimSpace(errOut.String()))
	}
	var pkgs []pythonPackage
	if err := json.Unmarshal(out.Bytes(), &pkgs); err != nil {
		return nil, fmt.Errorf("parsing the list of installed Python packages: %w", err)
	}

	var deps []*pulumirpc.PackageDependency
	for _, pkg := range pkgs {
		if dep := packageDependency(pkg); dep != nil {
			deps = append(deps, dep)
		}
	}
	logging.V(5).Infof("GetRequiredPackages: %v", deps)
	return deps, nil
}

// packageDependency maps one Python package to the plugin it needs, or nil when it needs none. pulumi-plugin.json
// wins; otherwise the plugin is named after the package ("pulumi-aws" -> "aws") and versioned like it.
func packageDependency(pkg pythonPackage) *pulumirpc.PackageDependency {
	var name, version, server string
	var param, extension *pulumirpc.PackageParameterization
	switch {
	case pkg.Plugin != nil:
		if !pkg.Plugin.Resource {
			return nil // the package declares it has no plugin
		}
		name, version, server = pkg.Plugin.Name, pkg.Plugin.Version, pkg.Plugin.Server
		if p := pkg.Plugin.Parameterization; p != nil {
			param = &pulumirpc.PackageParameterization{Name: p.Name, Version: p.Version, Value: p.Value}
		}
		if p := pkg.Plugin.ExtensionParameterization; p != nil {
			extension = &pulumirpc.PackageParameterization{Name: p.Name, Version: p.Version, Value: p.Value}
		}
	case packagesWithoutPlugins[pkg.Name]:
		return nil
	}
	if name == "" {
		name = strings.TrimPrefix(pkg.Name, "pulumi-")
	}
	if version == "" {
		v, err := pluginVersionFromPEP440(pkg.Version)
		if err != nil {
			logging.V(5).Infof("skipping %s: %v", pkg.Name, err)
			return nil
		}
		version = v
	}
	if !strings.HasPrefix(version, "v") {
		version = "v" + version
	}
	return &pulumirpc.PackageDependency{
		Name: name, Kind: "resource", Version: version, Server: server, Parameterization: param, Extension: extension,
	}
}

var pep440 = regexp.MustCompile(`^(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?(?:\.post(\d+))?(?:\.dev(\d+))?$`)

// pluginVersionFromPEP440 converts the subset of PEP 440 that Pulumi packages use into the semver of their plugin:
// "1.2" -> "1.2.0", "1.2.3a4" -> "1.2.3-alpha.4", "1.2.3rc1" -> "1.2.3-rc.1", "1.2.3.post4" -> "1.2.3+post4",
// "1.2.3.dev5" -> "1.2.3+dev5", "1.2.3.post4.dev5" -> "1.2.3+post4dev5". Epochs and local versions are rejected.
func pluginVersionFromPEP440(v string) (string, error) {
	m := pep440.FindStringSubmatch(v)
	if m == nil {
		return "", fmt.Errorf("cannot derive a plugin version from Python package version %q", v)
	}
	release := strings.Split(m[1], ".")
	for len(release) < 3 {
		release = append(release, "0")
	}
	out := strings.Join(release, ".")
	if m[2] != "" {
		out += "-" + map[string]string{"a": "alpha", "b": "beta", "rc": "rc"}[m[2]] + "." + m[3]
	}
	var build string
	if m[4] != "" {
		build += "post" + m[4]
	}
	if m[5] != "" {
		build += "dev" + m[5]
	}
	if build != "" {
		out += "+" + build
	}
	return out, nil
}
