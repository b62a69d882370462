package main

import (
	"fmt"
	"sort"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Property-map helpers. Inputs arrive with secret and computed markers kept
// (the engine talks to us with acceptSecrets=true); these helpers read plain
// values out of them without losing the markers in the maps we hand back.

// plain strips secret and output wrappers, recursively.
func plain(v resource.PropertyValue) resource.PropertyValue {
	switch {
	case v.IsSecret():
		return plain(v.SecretValue().Element)
	case v.IsOutput():
		o := v.OutputValue()
		if !o.Known {
			return resource.MakeComputed(resource.NewProperty(""))
		}
		return plain(o.Element)
	case v.IsObject():
		out := resource.PropertyMap{}
		for k, e := range v.ObjectValue() {
			out[k] = plain(e)
		}
		return resource.NewProperty(out)
	case v.IsArray():
		arr := v.ArrayValue()
		out := make([]resource.PropertyValue, len(arr))
		for i, e := range arr {
			out[i] = plain(e)
		}
		return resource.NewProperty(out)
	}
	return v
}

// isUnknown reports whether v (or anything inside it) is not known yet.
func isUnknown(v resource.PropertyValue) bool {
	return v.ContainsUnknowns()
}

// isSecret reports whether v is or contains a secret.
func isSecret(v resource.PropertyValue) bool {
	return v.ContainsSecrets()
}

// present returns the plain value of m[k] and whether it is set (not absent, not null).
func present(m resource.PropertyMap, k resource.PropertyKey) (resource.PropertyValue, bool) {
	v, ok := m[k]
	if !ok {
		return resource.PropertyValue{}, false
	}
	p := plain(v)
	if p.IsNull() {
		return p, false
	}
	return p, true
}

func getString(m resource.PropertyMap, k resource.PropertyKey) (string, bool, error) {
	v, ok := present(m, k)
	if !ok {
		return "", false, nil
	}
	if !v.IsString() {
		return "", false, fmt.Errorf("property %q must be a string, got %s", k, v.TypeString())
	}
	return v.StringValue(), true, nil
}

func getBool(m resource.PropertyMap, k resource.PropertyKey, def bool) (bool, error) {
	v, ok := present(m, k)
	if !ok {
		return def, nil
	}
	if !v.IsBool() {
		return def, fmt.Errorf("property %q must be a boolean, got %s", k, v.TypeString())
	}
	return v.BoolValue(), nil
}

func getNumber(m resource.PropertyMap, k resource.PropertyKey, def float64) (float64, error) {
	v, ok := present(m, k)
	if !ok {
		return def, nil
	}
	if !v.IsNumber() {
		return def, fmt.Errorf("property %q must be a number, got %s", k, v.TypeString())
	}
	return v.NumberValue(), nil
}

func getStringList(m resource.PropertyMap, k resource.PropertyKey) ([]string, bool, error) {
	v, ok := present(m, k)
	if !ok {
		return nil, false, nil
	}
	if !v.IsArray() {
		return nil, false, fmt.Errorf("property %q must be a list of strings, got %s", k, v.TypeString())
	}
	var out []string
	for i, e := range v.ArrayValue() {
		if !e.IsString() {
			return nil, false, fmt.Errorf("property %q[%d] must be a string, got %s", k, i, e.TypeString())
		}
		out = append(out, e.StringValue())
	}
	return out, true, nil
}

func getStringMap(m resource.PropertyMap, k resource.PropertyKey) (map[string]string, error) {
	v, ok := present(m, k)
	if !ok {
		return nil, nil
	}
	if !v.IsObject() {
		return nil, fmt.Errorf("property %q must be a map of strings, got %s", k, v.TypeString())
	}
	out := map[string]string{}
	for mk, e := range v.ObjectValue() {
		if e.IsNull() {
			continue
		}
		if !e.IsString() {
			return nil, fmt.Errorf("property %q[%q] must be a string, got %s", k, mk, e.TypeString())
		}
		out[string(mk)] = e.StringValue()
	}
	return out, nil
}

func getObject(m resource.PropertyMap, k resource.PropertyKey) (resource.PropertyMap, bool, error) {
	v, ok := present(m, k)
	if !ok {
		return nil, false, nil
	}
	if !v.IsObject() {
		return nil, false, fmt.Errorf("property %q must be an object, got %s", k, v.TypeString())
	}
	return v.ObjectValue(), true, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// setDefault sets m[k] = def when k is absent or null. A secret wrapper around the
// containing object is kept by the caller (see withDefaultsInside).
func setDefault(m resource.PropertyMap, k resource.PropertyKey, def resource.PropertyValue) {
	if v, ok := m[k]; !ok || v.IsNull() {
		m[k] = def
	}
}

// mapInside applies f to the object wrapped by v (through secret wrappers), keeping
// the wrappers. Unknown values and non-objects are returned unchanged.
func mapInside(v resource.PropertyValue, f func(resource.PropertyMap) resource.PropertyMap) resource.PropertyValue {
	switch {
	case v.IsSecret():
		return resource.MakeSecret(mapInside(v.SecretValue().Element, f))
	case v.IsObject():
		return resource.NewProperty(f(v.ObjectValue().Copy()))
	}
	return v
}
