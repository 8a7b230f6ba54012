package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Change is one key whose value differs between two configurations, named
// as in the file (dotted: "tags.nofailover", "pooler.pgbouncer.databases.app.target").
// A key present in only one of them (a section added or removed) is one
// Change at that key.
type Change struct {
	Key      string
	Old, New string
	// Secret: the key holds a password or a secret; Old and New are empty.
	Secret bool
}

// Diff lists the keys whose values differ from a to b, in the file's order
// (maps by key). It walks the schema itself, so a key added to Config is
// compared without being listed here.
func Diff(a, b *Config) []Change {
	var out []Change
	diff("", reflect.ValueOf(*a), reflect.ValueOf(*b), &out)
	return out
}

var durationType = reflect.TypeOf(Duration(0))

func diff(key string, a, b reflect.Value, out *[]Change) {
	if equal(a, b) {
		return
	}
	switch {
	case !a.IsValid() || !b.IsValid():
	case a.Kind() == reflect.Pointer:
		if !a.IsNil() && !b.IsNil() {
			diff(key, a.Elem(), b.Elem(), out)
			return
		}
	case a.Kind() == reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			f := a.Type().Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			k := key
			if opts != "inline" {
				k = join(key, name)
			}
			diff(k, a.Field(i), b.Field(i), out)
		}
		return
	case a.Kind() == reflect.Map:
		var keys []string
		for _, m := range []reflect.Value{a, b} {
			for _, k := range m.MapKeys() {
				if !slices.Contains(keys, k.String()) {
					keys = append(keys, k.String())
				}
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			kv := reflect.ValueOf(k).Convert(a.Type().Key())
			diff(join(key, k), a.MapIndex(kv), b.MapIndex(kv), out)
		}
		return
	}
	c := Change{Key: key, Old: show(a), New: show(b)}
	if secretKey(key) {
		c = Change{Key: key, Secret: true}
	}
	*out = append(*out, c)
}

// equal treats an empty slice or map as equal to a missing one: the file
// cannot tell them apart.
func equal(a, b reflect.Value) bool {
	if !a.IsValid() || !b.IsValid() {
		return a.IsValid() == b.IsValid()
	}
	if k := a.Kind(); (k == reflect.Slice || k == reflect.Map) && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

func join(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

// secretKey says whether a key's value must never reach a log.
func secretKey(key string) bool {
	last := key[strings.LastIndexByte(key, '.')+1:]
	return strings.Contains(last, "password") || strings.Contains(last, "secret")
}

// show is a value as a log line shows it ("" when absent).
func show(v reflect.Value) string {
	switch {
	case !v.IsValid():
		return ""
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			return ""
		}
		return show(v.Elem())
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.Struct || v.Kind() == reflect.Map:
		return "{...}"
	}
	return fmt.Sprint(v.Interface())
}
