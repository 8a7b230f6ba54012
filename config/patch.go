package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// MergePatch applies an RFC 7396 JSON merge patch to the stored dynamic
// configuration (empty: none yet): a key set to null is removed (its
// default applies again), an object is merged key by key, anything else
// replaces. PATCH /config and `pgwarden edit-config --set` both change the
// configuration through it, so the two cannot drift apart; the result is
// validated by whoever stores it (ParseDynamic).
func MergePatch(stored, patch []byte) ([]byte, error) {
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	if _, ok := p.(map[string]any); !ok {
		return nil, fmt.Errorf("patch: must be a JSON object")
	}
	var cur any = map[string]any{}
	if len(bytes.TrimSpace(stored)) > 0 {
		if err := json.Unmarshal(stored, &cur); err != nil {
			return nil, fmt.Errorf("stored configuration is not JSON: %w", err)
		}
	}
	return json.Marshal(mergeValue(cur, p))
}

func mergeValue(doc, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	d, ok := doc.(map[string]any)
	if !ok {
		d = map[string]any{}
	}
	out := make(map[string]any, len(d))
	for k, v := range d {
		out[k] = v
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = mergeValue(out[k], v)
	}
	return out
}

// SetsPatch turns `--set key=value` arguments into a merge patch: value is
// JSON or else a plain string, key is a top-level key or parameters.NAME
// (whose value PostgreSQL reads as a string); null removes the key.
func SetsPatch(sets []string) ([]byte, error) {
	patch := map[string]any{}
	params := map[string]any{}
	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--set %q: expected key=value", kv)
		}
		var val any
		if err := json.Unmarshal([]byte(v), &val); err != nil {
			val = v // a plain string
		}
		if name, ok := strings.CutPrefix(k, "parameters."); ok {
			if name == "" {
				return nil, fmt.Errorf("--set %q: parameters. needs a parameter name", kv)
			}
			if val != nil {
				val = fmt.Sprint(val)
			}
			params[name] = val
			continue
		}
		patch[k] = val
	}
	if len(params) > 0 {
		if _, ok := patch["parameters"]; ok {
			return nil, fmt.Errorf("--set parameters and --set parameters.NAME together: set one or the other")
		}
		patch["parameters"] = params
	}
	return json.Marshal(patch)
}
