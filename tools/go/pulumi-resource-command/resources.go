package main

import (
	"fmt"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"golang.org/x/crypto/ssh"
)

// Resource type tokens, as registered by the pulumi-command 1.2.1 SDKs.
const (
	typeLocalCommand  = "command:local:Command"
	typeRemoteCommand = "command:remote:Command"
	typeCopyToRemote  = "command:remote:CopyToRemote"
	typeCopyFile      = "command:remote:CopyFile" // deprecated upstream, kept for completeness
	funcLocalRun      = "command:local:run"
)

// inputKeys lists each resource's input properties. Diff compares exactly these
// between the old state and the new inputs, like upstream (its state embeds the inputs).
var inputKeys = map[string][]resource.PropertyKey{
	typeLocalCommand: {"addPreviousOutputInEnv", "archivePaths", "assetPaths", "create", "delete", "dir",
		"environment", "interpreter", "logging", "stdin", "triggers", "update"},
	typeRemoteCommand: {"addPreviousOutputInEnv", "connection", "create", "delete", "environment",
		"logging", "stdin", "triggers", "update"},
	typeCopyToRemote: {"connection", "remotePath", "source", "triggers"},
	typeCopyFile:     {"connection", "localPath", "remotePath", "triggers"},
}

// stdoutDeps are the inputs whose secretness flows into stdout/stderr (upstream's
// local.Command wiring; applied to remote.Command too, which is stricter than upstream).
var stdoutDeps = []resource.PropertyKey{"create", "update", "delete", "environment", "stdin", "triggers",
	"interpreter", "dir"}

var loggingValues = []string{"stdout", "stderr", "stdoutAndStderr", "none"}

func knownType(t string) bool {
	_, ok := inputKeys[t]
	return ok
}

// ---------------------------------------------------------------------------------------------
// Check: validate and apply the schema defaults.

type checker struct {
	failures []plugin.CheckFailure
}

func (c *checker) fail(prop, format string, args ...any) {
	c.failures = append(c.failures, plugin.CheckFailure{
		Property: resource.PropertyKey(prop), Reason: fmt.Sprintf(format, args...),
	})
}

// known returns the plain value of a property when it is set and fully known.
func (c *checker) known(m resource.PropertyMap, k resource.PropertyKey) (resource.PropertyValue, bool) {
	v, ok := m[k]
	if !ok || v.IsNull() || isUnknown(v) {
		return resource.PropertyValue{}, false
	}
	p := plain(v)
	return p, !p.IsNull()
}

func (c *checker) str(m resource.PropertyMap, k resource.PropertyKey, prefix string) {
	if v, ok := c.known(m, k); ok && !v.IsString() {
		c.fail(prefix+string(k), "%s must be a string", prefix+string(k))
	}
}

func (c *checker) num(m resource.PropertyMap, k resource.PropertyKey, prefix string) {
	if v, ok := c.known(m, k); ok && !v.IsNumber() {
		c.fail(prefix+string(k), "%s must be a number", prefix+string(k))
	}
}

func (c *checker) boolean(m resource.PropertyMap, k resource.PropertyKey) {
	if v, ok := c.known(m, k); ok && !v.IsBool() {
		c.fail(string(k), "%s must be a boolean", k)
	}
}

func (c *checker) strList(m resource.PropertyMap, k resource.PropertyKey) {
	if _, ok := c.known(m, k); ok {
		if _, _, err := getStringList(m, k); err != nil {
			c.fail(string(k), "%v", err)
		}
	}
}

func (c *checker) strMap(m resource.PropertyMap, k resource.PropertyKey) {
	if _, ok := c.known(m, k); ok {
		if _, err := getStringMap(m, k); err != nil {
			c.fail(string(k), "%v", err)
		}
	}
}

func (c *checker) logging(m resource.PropertyMap) {
	if v, ok := c.known(m, "logging"); ok {
		if !v.IsString() || !contains(loggingValues, v.StringValue()) {
			c.fail("logging", "logging must be one of %s", strings.Join(loggingValues, ", "))
		}
	}
}

func (c *checker) unsupported(m resource.PropertyMap, k resource.PropertyKey) {
	v, ok := m[k]
	if !ok || v.IsNull() {
		return
	}
	if p := plain(v); p.IsArray() && len(p.ArrayValue()) == 0 {
		return
	}
	c.fail(string(k), "%s is not supported by this build of pulumi-resource-command "+
		"(hardened-lightsail's compatible provider); remove it or use stdout", k)
}

// connection validates a connection (or proxy) object and fills its defaults,
// keeping any secret wrapper around it.
func (c *checker) connection(m resource.PropertyMap, k resource.PropertyKey, prefix string, required bool) {
	v, ok := m[k]
	if !ok || v.IsNull() {
		if required {
			c.fail(prefix+string(k), "missing required property '%s'", prefix+string(k))
		}
		return
	}
	if v.IsComputed() || (v.IsOutput() && !v.OutputValue().Known) {
		return
	}
	if p := plain(v); !p.IsObject() {
		if !isUnknown(v) {
			c.fail(prefix+string(k), "%s must be an object", prefix+string(k))
		}
		return
	}
	p := prefix + string(k) + "."
	m[k] = mapInside(v, func(o resource.PropertyMap) resource.PropertyMap {
		if h, ok := o["host"]; !ok || h.IsNull() {
			c.fail(p+"host", "missing required property '%shost'", p)
		}
		c.str(o, "host", p)
		c.str(o, "user", p)
		c.str(o, "password", p)
		c.str(o, "privateKey", p)
		c.str(o, "privateKeyPassword", p)
		c.str(o, "agentSocketPath", p)
		c.str(o, "hostKey", p)
		c.num(o, "port", p)
		c.num(o, "dialErrorLimit", p)
		c.num(o, "perDialTimeout", p)
		if hk, ok := c.known(o, "hostKey"); ok && hk.IsString() {
			if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hk.StringValue())); err != nil {
				c.fail(p+"hostKey", "%shostKey must be a public key in authorized_keys format: %v", p, err)
			}
		}
		setDefault(o, "user", resource.NewProperty("root"))
		setDefault(o, "port", resource.NewProperty(22.0))
		setDefault(o, "dialErrorLimit", resource.NewProperty(10.0))
		setDefault(o, "perDialTimeout", resource.NewProperty(15.0))
		if prefix == "" {
			c.connection(o, "proxy", p, false)
		}
		return o
	})
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// checkInputs validates news (a copy the caller owns) for the given type and applies defaults.
func checkInputs(typ string, news resource.PropertyMap) (resource.PropertyMap, []plugin.CheckFailure) {
	c := &checker{}
	switch typ {
	case typeLocalCommand, funcLocalRun:
		for _, k := range []resource.PropertyKey{"create", "update", "delete", "dir", "stdin", "command"} {
			c.str(news, k, "")
		}
		c.strList(news, "interpreter")
		c.strMap(news, "environment")
		c.boolean(news, "addPreviousOutputInEnv")
		c.logging(news)
		c.unsupported(news, "assetPaths")
		c.unsupported(news, "archivePaths")
		if typ == funcLocalRun {
			if _, ok := news["command"]; !ok {
				c.fail("command", "missing required property 'command'")
			}
		}
		setDefault(news, "addPreviousOutputInEnv", resource.NewProperty(true))
	case typeRemoteCommand:
		c.connection(news, "connection", "", true)
		for _, k := range []resource.PropertyKey{"create", "update", "delete", "stdin"} {
			c.str(news, k, "")
		}
		c.strMap(news, "environment")
		c.boolean(news, "addPreviousOutputInEnv")
		c.logging(news)
		setDefault(news, "addPreviousOutputInEnv", resource.NewProperty(true))
	case typeCopyToRemote:
		c.connection(news, "connection", "", true)
		if v, ok := news["remotePath"]; !ok || v.IsNull() {
			c.fail("remotePath", "missing required property 'remotePath'")
		}
		c.str(news, "remotePath", "")
		if v, ok := news["source"]; !ok || v.IsNull() {
			c.fail("source", "missing required property 'source'")
		} else if src, ok := c.known(news, "source"); ok {
			switch {
			case src.IsAsset():
				a := src.AssetValue()
				if !a.IsPath() && !a.IsText() {
					c.fail("source", "source asset must be a FileAsset or a StringAsset (remote assets are not supported)")
				}
			case src.IsArchive():
				if !src.ArchiveValue().IsPath() {
					c.fail("source", "source archive must be a FileArchive (a path to a file or directory)")
				}
			default:
				c.fail("source", "source must be an asset or an archive")
			}
		}
	case typeCopyFile:
		c.connection(news, "connection", "", true)
		for _, k := range []resource.PropertyKey{"localPath", "remotePath"} {
			if v, ok := news[k]; !ok || v.IsNull() {
				c.fail(string(k), "missing required property '%s'", k)
			}
			c.str(news, k, "")
		}
	}
	return news, c.failures
}

// ---------------------------------------------------------------------------------------------
// Diff: structural comparison of the old state's inputs against the new inputs. Any
// change is an in-place update (the update command, or create when update is unset,
// runs again) except a change under `triggers`, which forces a replacement.

func diffInputs(typ string, olds, news resource.PropertyMap, ignoreChanges []string) plugin.DiffResult {
	keys := inputKeys[typ]
	oldIn := resource.PropertyMap{}
	newIn := resource.PropertyMap{}
	for _, k := range keys {
		if v, ok := olds[k]; ok && !v.IsNull() {
			oldIn[k] = v
		}
		if v, ok := news[k]; ok && !v.IsNull() {
			newIn[k] = v
		}
	}
	for _, ic := range ignoreChanges {
		k := resource.PropertyKey(ic)
		if v, ok := oldIn[k]; ok {
			newIn[k] = v
		} else {
			delete(newIn, k)
		}
	}

	objDiff := oldIn.Diff(newIn)
	if objDiff == nil || !objDiff.AnyChanges() {
		return plugin.DiffResult{Changes: plugin.DiffNone}
	}

	// The detailed diff is reported per top-level property (the CLI lists these keys,
	// e.g. "[diff: ~triggers]"; a nested path such as triggers[0] would not be shown).
	res := plugin.DiffResult{Changes: plugin.DiffSome, DetailedDiff: map[string]plugin.PropertyDiff{}}
	for _, k := range keys {
		var kind plugin.DiffKind
		switch {
		case objDiff.Added(k):
			kind = plugin.DiffAdd
		case objDiff.Deleted(k):
			kind = plugin.DiffDelete
		case objDiff.Updated(k):
			kind = plugin.DiffUpdate
		default:
			continue
		}
		res.ChangedKeys = append(res.ChangedKeys, k)
		if k == "triggers" {
			kind = kind.AsReplace()
			res.ReplaceKeys = append(res.ReplaceKeys, k)
		}
		res.DetailedDiff[string(k)] = plugin.PropertyDiff{Kind: kind}
	}
	return res
}

// ---------------------------------------------------------------------------------------------
// Outputs.

// commandOutputs builds a Command's state: its inputs as given (secret markers kept)
// plus stdout and stderr. Output text is secret when any input it derives from is.
func commandOutputs(inputs resource.PropertyMap, stdout, stderr resource.PropertyValue) resource.PropertyMap {
	out := inputs.Copy()
	secret := false
	for _, k := range stdoutDeps {
		if v, ok := inputs[k]; ok && isSecret(v) {
			secret = true
		}
	}
	if secret {
		if !stdout.IsSecret() {
			stdout = resource.MakeSecret(stdout)
		}
		if !stderr.IsSecret() {
			stderr = resource.MakeSecret(stderr)
		}
	}
	out["stdout"] = stdout
	out["stderr"] = stderr
	return out
}

func unknownString() resource.PropertyValue {
	return resource.MakeComputed(resource.NewProperty(""))
}
