package main

import (
	"fmt"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// Resource type tokens, as registered by the pulumi-command 1.2.1 SDKs.
const (
	typeLocalCommand  = "command:local:Command"
	typeRemoteCommand = "command:remote:Command"
	typeCopyToRemote  = "command:remote:CopyToRemote"
	typeCopyFile      = "command:remote:CopyFile" // deprecated upstream, kept for completeness
	funcLocalRun      = "command:local:run"
)

// Check decodes the inputs into the shape upstream declares for each type (its Go structs, decoded
// by pulumi-go-provider's infer package) and encodes them back: the result is what the engine
// records as the resource's inputs, so it must match upstream's byte for byte or a stack made with
// one provider shows a diff under the other.

type fieldKind int

const (
	kindString fieldKind = iota
	kindNumber           // float64 upstream
	kindInt
	kindBool
	kindStringList
	kindStringMap
	kindAnyList
	kindConnection
	kindProxy
	kindAssetOrArchive
)

// goType is how upstream's decoder names a kind in its error messages.
var goType = map[fieldKind]string{
	kindString: "string", kindNumber: "float64", kindInt: "int", kindBool: "bool",
	kindStringList: "[]string", kindStringMap: "map[string]string", kindAnyList: "[]interface {}",
	kindConnection: "remote.Connection", kindProxy: "remote.ProxyConnection",
	kindAssetOrArchive: "types.AssetOrArchive",
}

type field struct {
	name     resource.PropertyKey
	kind     fieldKind
	required bool
	secret   bool // `provider:"secret"` upstream: always a secret in the checked inputs
}

// inputShape is one of upstream's input structs.
type inputShape struct {
	goName string // e.g. remote.CommandInputs, as named in upstream's check failures
	fields []field
	// defaults set when a field is absent (upstream's infer.Annotator SetDefault calls).
	defaults map[resource.PropertyKey]resource.PropertyValue
}

func (s *inputShape) field(k resource.PropertyKey) (field, bool) {
	for _, f := range s.fields {
		if f.name == k {
			return f, true
		}
	}
	return field{}, false
}

// Upstream: provider/pkg/provider/common/inputs.go (triggers, create, update, delete),
// local/base.go (BaseInputs), local/run.go (RunInputs), remote/command.go (CommandInputs),
// remote/copy.go (CopyToRemoteInputs), remote/copyfile.go (CopyFileInputs),
// remote/connection.go (Connection and its defaults), remote/proxyConnection.go.
var (
	resourceFields = []field{{name: "triggers", kind: kindAnyList}, {name: "create", kind: kindString},
		{name: "update", kind: kindString}, {name: "delete", kind: kindString}}
	localBaseFields = []field{{name: "stdin", kind: kindString}, {name: "logging", kind: kindString},
		{name: "interpreter", kind: kindStringList}, {name: "dir", kind: kindString},
		{name: "environment", kind: kindStringMap}, {name: "assetPaths", kind: kindStringList},
		{name: "archivePaths", kind: kindStringList}, {name: "addPreviousOutputInEnv", kind: kindBool}}
	connectionBaseFields = []field{{name: "user", kind: kindString},
		{name: "password", kind: kindString, secret: true}, {name: "host", kind: kindString, required: true},
		{name: "port", kind: kindNumber}, {name: "privateKey", kind: kindString, secret: true},
		{name: "privateKeyPassword", kind: kindString, secret: true}, {name: "agentSocketPath", kind: kindString},
		{name: "dialErrorLimit", kind: kindInt}, {name: "perDialTimeout", kind: kindInt},
		{name: "hostKey", kind: kindString}}
	connectionDefaults = map[resource.PropertyKey]resource.PropertyValue{
		"user": resource.NewProperty("root"), "port": resource.NewProperty(22.0),
		"dialErrorLimit": resource.NewProperty(10.0), "perDialTimeout": resource.NewProperty(15.0),
	}

	connectionShape = &inputShape{goName: "remote.Connection",
		fields:   append(append([]field{}, connectionBaseFields...), field{name: "proxy", kind: kindProxy}),
		defaults: connectionDefaults}
	proxyShape = &inputShape{goName: "remote.ProxyConnection", fields: connectionBaseFields,
		defaults: connectionDefaults}

	shapes = map[string]*inputShape{
		typeLocalCommand: {goName: "local.CommandInputs",
			fields: append(append([]field{}, resourceFields...), localBaseFields...)},
		funcLocalRun: {goName: "local.RunInputs",
			fields: append(append([]field{}, localBaseFields...), field{name: "command", kind: kindString, required: true})},
		typeRemoteCommand: {goName: "remote.CommandInputs", fields: append(append([]field{}, resourceFields...),
			field{name: "stdin", kind: kindString}, field{name: "logging", kind: kindString},
			field{name: "connection", kind: kindConnection, required: true, secret: true},
			field{name: "environment", kind: kindStringMap}, field{name: "addPreviousOutputInEnv", kind: kindBool})},
		typeCopyToRemote: {goName: "remote.CopyToRemoteInputs", fields: []field{
			{name: "connection", kind: kindConnection, required: true, secret: true},
			{name: "triggers", kind: kindAnyList},
			{name: "source", kind: kindAssetOrArchive, required: true},
			{name: "remotePath", kind: kindString, required: true}}},
		typeCopyFile: {goName: "remote.CopyFileInputs", fields: []field{
			{name: "connection", kind: kindConnection, required: true, secret: true},
			{name: "triggers", kind: kindAnyList},
			{name: "localPath", kind: kindString, required: true},
			{name: "remotePath", kind: kindString, required: true}}},
	}
)

func knownType(t string) bool {
	_, ok := shapes[t]
	return ok && t != funcLocalRun
}

// checkInputs validates news against the type's shape. Without failures it returns the inputs as
// upstream re-encodes them: nulls dropped, defaults filled in, `secret` fields made secret. With
// failures it returns news as given with only the secret fields made secret (no defaults).
func checkInputs(typ string, news resource.PropertyMap) (resource.PropertyMap, []plugin.CheckFailure) {
	shape := shapes[typ]
	failures := decodeFailures(shape, news)
	if typ == typeCopyToRemote {
		failures = append(failures, copySourceFailures(news)...)
	}
	if len(failures) > 0 {
		refused := withSecretFields(shape, news)
		if _, ok := present(refused, "source"); typ == typeCopyToRemote && !ok {
			refused["source"] = resource.NewProperty(resource.PropertyMap{}) // upstream encodes its empty struct
		}
		return refused, failures
	}
	return encodeChecked(shape, news), nil
}

// decodeFailures reports what upstream's decoder refuses: unknown fields, missing required fields
// and values of the wrong type (unknown values are accepted as they are).
func decodeFailures(shape *inputShape, m resource.PropertyMap) []plugin.CheckFailure {
	var failures []plugin.CheckFailure
	fail := func(prop, format string, args ...any) {
		failures = append(failures, plugin.CheckFailure{Property: resource.PropertyKey(prop),
			Reason: fmt.Sprintf(format, args...)})
	}
	for _, k := range m.StableKeys() {
		if _, ok := shape.field(k); !ok && !m[k].IsNull() {
			fail(string(k), "Unrecognized field '%s' on '%s'", k, shape.goName)
		}
	}
	for _, f := range shape.fields {
		v, present := m[f.name]
		if !present || v.IsNull() {
			if f.required {
				fail(string(f.name), "Missing required field '%s' on '%s'", f.name, shape.goName)
			}
			continue
		}
		v = unwrapSecret(v)
		if v.ContainsUnknowns() && (v.IsComputed() || v.IsOutput()) {
			continue
		}
		wrongType := func(prop string, got resource.PropertyValue, want fieldKind) {
			fail(prop, "Field '%s' on '%s' must be a '%s'; got '%s' instead", prop, shape.goName, goType[want], goTypeOf(got))
		}
		switch f.kind {
		case kindString:
			if !v.IsString() {
				wrongType(string(f.name), v, f.kind)
			}
		case kindNumber, kindInt:
			if !v.IsNumber() {
				wrongType(string(f.name), v, f.kind)
			}
		case kindBool:
			if !v.IsBool() {
				wrongType(string(f.name), v, f.kind)
			}
		case kindAnyList:
			if !v.IsArray() {
				wrongType(string(f.name), v, f.kind)
			}
		case kindStringList:
			if !v.IsArray() {
				wrongType(string(f.name), v, f.kind)
				continue
			}
			for i, e := range v.ArrayValue() {
				if e = unwrapSecret(e); !e.IsString() && !e.IsComputed() && !e.IsOutput() {
					wrongType(fmt.Sprintf("%s[%d]", f.name, i), e, kindString)
				}
			}
		case kindStringMap:
			if !v.IsObject() {
				wrongType(string(f.name), v, f.kind)
				continue
			}
			obj := v.ObjectValue()
			for _, k := range obj.StableKeys() {
				if e := unwrapSecret(obj[k]); !e.IsNull() && !e.IsString() && !e.IsComputed() && !e.IsOutput() {
					wrongType(fmt.Sprintf("%s[%s] value", f.name, k), e, kindString)
				}
			}
		case kindConnection, kindProxy:
			if !v.IsObject() {
				wrongType(string(f.name), v, f.kind)
				continue
			}
			nested := connectionShape
			if f.kind == kindProxy {
				nested = proxyShape
			}
			if inner := decodeFailures(nested, v.ObjectValue()); len(inner) > 0 {
				lines := make([]string, len(inner))
				for i, e := range inner {
					lines[i] = fmt.Sprintf("%s: %s", e.Property, e.Reason)
				}
				fail(string(f.name), "An error occurred decoding '%s.%s': %d failures decoding:\n\t%s",
					shape.goName[strings.Index(shape.goName, ".")+1:], f.name,
					len(inner), strings.Join(lines, "\n\t"))
			}
		case kindAssetOrArchive:
			if !v.IsAsset() && !v.IsArchive() {
				wrongType(string(f.name), v, f.kind)
			}
		}
	}
	return failures
}

// copySourceFailures are CopyToRemote's own checks of its source (upstream remote/copyController.go, Check).
func copySourceFailures(news resource.PropertyMap) []plugin.CheckFailure {
	src := unwrapSecret(news["source"])
	if src.ContainsUnknowns() {
		return nil
	}
	switch {
	case src.IsAsset():
		if a := src.AssetValue(); !a.IsPath() && !a.IsText() {
			return []plugin.CheckFailure{{Property: "asset", Reason: "asset must be a path-based file asset or a text asset"}}
		}
	case src.IsArchive():
		if !src.ArchiveValue().IsPath() {
			return []plugin.CheckFailure{{Property: "archive", Reason: "archive must be a path to a file or directory"}}
		}
	default:
		return []plugin.CheckFailure{{Property: "asset", Reason: "either asset or archive must be set"}}
	}
	return nil
}

// encodeChecked is the decode/encode round trip of a valid input map.
func encodeChecked(shape *inputShape, m resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for _, f := range shape.fields {
		v, ok := m[f.name]
		if !ok || v.IsNull() {
			if d, has := shape.defaults[f.name]; has {
				v = d
			} else {
				continue
			}
		}
		v = mapInside(v, func(inner resource.PropertyValue) resource.PropertyValue {
			switch {
			case f.kind == kindConnection && inner.IsObject():
				return resource.NewProperty(encodeChecked(connectionShape, inner.ObjectValue()))
			case f.kind == kindProxy && inner.IsObject():
				return resource.NewProperty(encodeChecked(proxyShape, inner.ObjectValue()))
			case f.kind == kindStringMap && inner.IsObject():
				entries := resource.PropertyMap{}
				for k, e := range inner.ObjectValue() {
					if !e.IsNull() {
						entries[k] = e
					}
				}
				return resource.NewProperty(entries)
			}
			return inner
		})
		if f.secret && !v.IsSecret() {
			v = resource.MakeSecret(v)
		}
		out[f.name] = v
	}
	return out
}

// withSecretFields returns m with the shape's secret fields made secret (also inside a connection).
func withSecretFields(shape *inputShape, m resource.PropertyMap) resource.PropertyMap {
	out := m.Copy()
	for _, f := range shape.fields {
		v, ok := out[f.name]
		if !ok || v.IsNull() {
			continue
		}
		if f.kind == kindConnection || f.kind == kindProxy {
			nested := connectionShape
			if f.kind == kindProxy {
				nested = proxyShape
			}
			v = mapInside(v, func(inner resource.PropertyValue) resource.PropertyValue {
				if !inner.IsObject() {
					return inner
				}
				return resource.NewProperty(withSecretFields(nested, inner.ObjectValue()))
			})
		}
		if f.secret && !v.IsSecret() {
			v = resource.MakeSecret(v)
		}
		out[f.name] = v
	}
	return out
}

// mapInside applies f to the value inside any secret wrapper, keeping the wrapper.
func mapInside(v resource.PropertyValue, f func(resource.PropertyValue) resource.PropertyValue) resource.PropertyValue {
	if v.IsSecret() {
		return resource.MakeSecret(mapInside(v.SecretValue().Element, f))
	}
	return f(v)
}

func unwrapSecret(v resource.PropertyValue) resource.PropertyValue {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	return v
}

// goTypeOf names a value's type the way Go's reflection names what upstream's decoder got.
func goTypeOf(v resource.PropertyValue) string {
	switch {
	case v.IsString():
		return "string"
	case v.IsNumber():
		return "float64"
	case v.IsBool():
		return "bool"
	case v.IsArray():
		return "[]interface {}"
	case v.IsObject():
		return "map[string]interface {}"
	case v.IsAsset():
		return "resource.Asset"
	case v.IsArchive():
		return "resource.Archive"
	}
	return v.TypeString()
}
