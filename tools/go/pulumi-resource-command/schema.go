package main

import (
	"encoding/json"
)

// ourBuild names this build; scripts/pulumi tells it from upstream's by the "hardened-lightsail"
// in the binary (hardened_lightsail/engine_env.py, OUR_BUILD_MARKER).
const ourBuild = "Run local and remote commands (hardened-lightsail's build of the pulumi-command provider)."

// schemaJSON returns a compact Pulumi package schema for the types this provider
// implements: property names, types, defaults, secrets and replaceOnChanges match
// pulumi-command 1.2.1; documentation text is left out. The engine does not need it
// for preview/up/destroy; it serves tools that ask for it (e.g. `pulumi package get-schema`).
func schemaJSON() []byte {
	type m = map[string]any
	str := m{"type": "string"}
	num := m{"type": "number"}
	integer := m{"type": "integer"}
	boolean := m{"type": "boolean"}
	strList := m{"type": "array", "items": str}
	strMap := m{"type": "object", "additionalProperties": str}
	anyList := m{"type": "array", "items": m{"$ref": "pulumi.json#/Any"}}
	secret := func(p m) m {
		q := m{"secret": true}
		for k, v := range p {
			q[k] = v
		}
		return q
	}
	ref := func(tok string) m { return m{"$ref": "#/types/" + tok} }
	withDefault := func(p m, d any) m {
		q := m{"default": d}
		for k, v := range p {
			q[k] = v
		}
		return q
	}
	logging := func(mod string) m {
		return m{"type": "string", "enum": []m{
			{"name": "Stdout", "value": "stdout"}, {"name": "Stderr", "value": "stderr"},
			{"name": "StdoutAndStderr", "value": "stdoutAndStderr"}, {"name": "None", "value": "none"},
		}, "x-module": mod}
	}
	connProps := func(withProxy bool) m {
		p := m{
			"host":               str,
			"port":               withDefault(num, 22),
			"user":               withDefault(str, "root"),
			"password":           secret(str),
			"privateKey":         secret(str),
			"privateKeyPassword": secret(str),
			"agentSocketPath":    str,
			"hostKey":            str,
			"dialErrorLimit":     withDefault(integer, 10),
			"perDialTimeout":     withDefault(integer, 15),
		}
		if withProxy {
			p["proxy"] = ref("command:remote:ProxyConnection")
		}
		return p
	}
	triggers := m{"type": "array", "items": m{"$ref": "pulumi.json#/Any"}, "replaceOnChanges": true}
	outputs := func(in m, extra m) m {
		o := m{}
		for k, v := range in {
			o[k] = v
		}
		for k, v := range extra {
			o[k] = v
		}
		return o
	}
	std := m{"stdout": str, "stderr": str}

	localIn := m{
		"create": str, "update": str, "delete": str, "dir": str, "stdin": str,
		"environment": strMap, "interpreter": strList, "triggers": triggers,
		"addPreviousOutputInEnv": boolean, "logging": ref("command:local:Logging"),
		"assetPaths": strList, "archivePaths": strList,
	}
	remoteIn := m{
		"connection": secret(ref("command:remote:Connection")),
		"create":     str, "update": str, "delete": str, "stdin": str,
		"environment": strMap, "triggers": triggers,
		"addPreviousOutputInEnv": boolean, "logging": ref("command:remote:Logging"),
	}
	copyIn := m{
		"connection": secret(ref("command:remote:Connection")),
		"source":     m{"$ref": "pulumi.json#/Asset"}, // Asset means AssetOrArchive in schemas
		"remotePath": str,
		"triggers":   triggers,
	}
	copyFileIn := m{
		"connection": secret(ref("command:remote:Connection")),
		"localPath":  str, "remotePath": str, "triggers": anyList,
	}
	runIn := m{
		"command": str, "dir": str, "stdin": str, "environment": strMap, "interpreter": strList,
		"addPreviousOutputInEnv": boolean, "logging": ref("command:local:Logging"),
		"assetPaths": strList, "archivePaths": strList,
	}

	spec := m{
		"name":        "command",
		"displayName": "Command",
		"version":     version,
		"description": ourBuild,
		"config":      m{},
		"provider":    m{"type": "object"},
		"types": m{
			"command:local:Logging":          logging("local"),
			"command:remote:Logging":         logging("remote"),
			"command:remote:Connection":      m{"type": "object", "properties": connProps(true), "required": []string{"host"}},
			"command:remote:ProxyConnection": m{"type": "object", "properties": connProps(false), "required": []string{"host"}},
		},
		"resources": m{
			typeLocalCommand: m{
				"inputProperties": localIn,
				"properties": outputs(localIn, m{
					"stdout": str, "stderr": str,
					"assets":  m{"type": "object", "additionalProperties": m{"$ref": "pulumi.json#/Asset"}},
					"archive": m{"$ref": "pulumi.json#/Archive"},
				}),
				"required": []string{"stdout", "stderr"},
			},
			typeRemoteCommand: m{
				"inputProperties": remoteIn,
				"requiredInputs":  []string{"connection"},
				"properties":      outputs(remoteIn, std),
				"required":        []string{"connection", "stdout", "stderr"},
			},
			typeCopyToRemote: m{
				"inputProperties": copyIn,
				"requiredInputs":  []string{"connection", "source", "remotePath"},
				"properties":      copyIn,
				"required":        []string{"connection", "source", "remotePath"},
			},
			typeCopyFile: m{
				"inputProperties":    copyFileIn,
				"requiredInputs":     []string{"connection", "localPath", "remotePath"},
				"properties":         copyFileIn,
				"required":           []string{"connection", "localPath", "remotePath"},
				"deprecationMessage": "This resource is deprecated and will be removed in a future release. Please use the `CopyToRemote` resource instead.",
			},
		},
		"functions": m{
			funcLocalRun: m{
				"inputs": m{"type": "object", "properties": runIn, "required": []string{"command"}},
				"outputs": m{"type": "object", "properties": outputs(runIn, std),
					"required": []string{"command", "stdout", "stderr"}},
			},
		},
	}
	b, err := json.Marshal(spec)
	if err != nil {
		panic(err) // static data
	}
	return b
}
