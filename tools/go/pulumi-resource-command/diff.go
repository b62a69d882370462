package main

import (
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// diffInputs compares the recorded inputs with the new checked inputs the way upstream does
// (pulumi-go-provider infer/resource.go, diff): a structural diff reported per property path
// ("triggers[0]"), where only a change of a whole top-level property that the schema marks
// replaceOnChanges (`triggers`) forces a replacement; a type without an Update method
// (CopyFile) replaces on every change. The pulumi-command Python SDK adds
// replace_on_changes=["triggers[*]"] to Command resources, so there the engine replaces on any
// trigger change; CopyToRemote gets no such option, so a changed trigger element is an update.
func diffInputs(typ string, oldInputs, oldOutputs, news resource.PropertyMap, ignoreChanges []string,
) *pulumirpc.DiffResponse {
	news = news.Copy()
	for _, k := range ignoreChanges {
		if v, ok := oldOutputs[resource.PropertyKey(k)]; ok {
			news[resource.PropertyKey(k)] = v
		}
	}
	for k := range news {
		if k == "version" || strings.HasPrefix(string(k), "__") {
			delete(news, k)
		}
	}
	if oldInputs == nil {
		// An engine that sends no old inputs: take them from the state, which embeds them.
		oldInputs = resource.PropertyMap{}
		for _, f := range shapes[typ].fields {
			oldInputs[f.name] = oldOutputs[f.name]
		}
	}
	objDiff := oldInputs.Diff(news)
	detailed := plugin.NewDetailedDiffFromObjectDiff(objDiff, false)

	resp := &pulumirpc.DiffResponse{
		Changes: pulumirpc.DiffResponse_DIFF_NONE, HasDetailedDiff: true,
		DetailedDiff: map[string]*pulumirpc.PropertyDiff{},
	}
	if objDiff != nil && objDiff.AnyChanges() {
		resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	diffs, replaces := map[string]bool{}, map[string]bool{}
	for path, d := range detailed {
		if typ == typeCopyFile || path == "triggers" {
			d.Kind = d.Kind.AsReplace()
		}
		head := path
		if parsed, err := resource.ParsePropertyPath(path); err == nil && len(parsed) > 0 {
			if s, ok := parsed[0].(string); ok {
				head = s
			}
		}
		diffs[head] = true
		if d.Kind.IsReplace() {
			replaces[head] = true
		}
		resp.DetailedDiff[path] = &pulumirpc.PropertyDiff{Kind: rpcDiffKind(d.Kind), InputDiff: d.InputDiff}
	}
	resp.Diffs, resp.Replaces = sortedSet(diffs), sortedSet(replaces)
	return resp
}

func rpcDiffKind(k plugin.DiffKind) pulumirpc.PropertyDiff_Kind {
	switch k {
	case plugin.DiffAdd:
		return pulumirpc.PropertyDiff_ADD
	case plugin.DiffAddReplace:
		return pulumirpc.PropertyDiff_ADD_REPLACE
	case plugin.DiffDelete:
		return pulumirpc.PropertyDiff_DELETE
	case plugin.DiffDeleteReplace:
		return pulumirpc.PropertyDiff_DELETE_REPLACE
	case plugin.DiffUpdateReplace:
		return pulumirpc.PropertyDiff_UPDATE_REPLACE
	}
	return pulumirpc.PropertyDiff_UPDATE
}

func sortedSet(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// previewOutputs marks what a preview cannot know, as upstream's default dependency wiring does
// (pulumi-go-provider infer/resource.go, markComputed): an output that mirrors the input of the
// same name stays; any other output is unknown on a create, and on an update when an input it
// depends on (every input) is unknown or changed from the recorded state.
func previewOutputs(typ string, outputs, news, oldState resource.PropertyMap, isCreate bool) resource.PropertyMap {
	changed := isCreate
	for _, f := range shapes[typ].fields {
		if changed {
			break
		}
		newValue := news[f.name]
		oldValue, hadOld := oldState[f.name]
		changed = newValue.ContainsUnknowns() && (newValue.IsComputed() || newValue.IsOutput()) ||
			hadOld && !newValue.DeepEquals(oldValue)
	}
	out := resource.PropertyMap{}
	for k, v := range outputs {
		mirrorsInput := false
		if in, ok := news[k]; ok && in.DeepEquals(v) && !sourceOfCopy(typ, k) {
			mirrorsInput = true
		}
		if !mirrorsInput && changed && !v.IsComputed() {
			v = unknownLike(v)
		}
		out[k] = v
	}
	return out
}

// sourceOfCopy: upstream re-encodes a copy's source asset so that it never equals the input
// during a preview; the preview of a CopyToRemote shows its source as unknown.
func sourceOfCopy(typ string, k resource.PropertyKey) bool {
	return typ == typeCopyToRemote && k == "source"
}

func unknownLike(v resource.PropertyValue) resource.PropertyValue {
	if v.IsSecret() {
		return resource.MakeSecret(resource.MakeComputed(resource.NewProperty("")))
	}
	return resource.MakeComputed(resource.NewProperty(""))
}
