package main

import (
	"fmt"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Property-map readers. Inputs arrive with secret and unknown markers (the engine talks to us
// with secrets accepted); these read the plain values through them.

// present returns the value of m[k] without secret wrappers, and whether it is set (not absent,
// not null).
func present(m resource.PropertyMap, k resource.PropertyKey) (resource.PropertyValue, bool) {
	v, ok := m[k]
	if !ok {
		return resource.PropertyValue{}, false
	}
	v = unwrapSecret(v)
	return v, !v.IsNull()
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

// plainString is m[k] as a string, "" when it is absent or not a string.
func plainString(m resource.PropertyMap, k resource.PropertyKey) string {
	s, _, _ := getString(m, k)
	return s
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
	out := []string{}
	for i, e := range v.ArrayValue() {
		if e = unwrapSecret(e); !e.IsString() {
			return nil, false, fmt.Errorf("property %q[%d] must be a string, got %s", k, i, e.TypeString())
		}
		out = append(out, unwrapSecret(e).StringValue())
	}
	return out, true, nil
}

// getStringMap returns m[k] as a map; entries that are null are left out.
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
		e = unwrapSecret(e)
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
