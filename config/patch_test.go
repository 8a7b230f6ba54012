package config

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestMergePatch(t *testing.T) {
	cases := []struct {
		name, stored, patch, want string
	}{
		{"set a key", `{"ttl":10}`, `{"loop_wait":2}`, `{"ttl":10,"loop_wait":2}`},
		{"replace a key", `{"ttl":10}`, `{"ttl":20}`, `{"ttl":20}`},
		{"null removes", `{"ttl":10,"pause":true}`, `{"pause":null}`, `{"ttl":10}`},
		{"objects merge", `{"parameters":{"a":"1","b":"2"}}`, `{"parameters":{"b":"3","c":"4"}}`, `{"parameters":{"a":"1","b":"3","c":"4"}}`},
		{"null inside an object", `{"parameters":{"a":"1","b":"2"}}`, `{"parameters":{"a":null}}`, `{"parameters":{"b":"2"}}`},
		{"nothing stored yet", ``, `{"ttl":10}`, `{"ttl":10}`},
	}
	for _, c := range cases {
		got, err := MergePatch([]byte(c.stored), []byte(c.patch))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		var g, w any
		_ = json.Unmarshal(got, &g)
		_ = json.Unmarshal([]byte(c.want), &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
	for _, bad := range []string{`[1]`, `"x"`, `{`} {
		if _, err := MergePatch([]byte(`{}`), []byte(bad)); err == nil {
			t.Errorf("patch %s accepted", bad)
		}
	}
	if _, err := MergePatch([]byte(`{`), []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "stored") {
		t.Errorf("a broken stored configuration: %v", err)
	}
}

func TestSetsPatch(t *testing.T) {
	cases := []struct {
		sets []string
		want string
	}{
		{[]string{"ttl=20", "pause=true"}, `{"ttl":20,"pause":true}`},
		{[]string{"parameters.work_mem=64MB", "parameters.max_connections=200"}, `{"parameters":{"work_mem":"64MB","max_connections":"200"}}`},
		{[]string{"parameters.work_mem=null"}, `{"parameters":{"work_mem":null}}`},
		{[]string{"synchronous_mode=null"}, `{"synchronous_mode":null}`},
		{[]string{"name=plain words"}, `{"name":"plain words"}`},
	}
	for _, c := range cases {
		got, err := SetsPatch(c.sets)
		if err != nil {
			t.Errorf("%v: %v", c.sets, err)
			continue
		}
		var g, w any
		_ = json.Unmarshal(got, &g)
		_ = json.Unmarshal([]byte(c.want), &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%v: got %s, want %s", c.sets, got, c.want)
		}
	}
	for _, bad := range [][]string{{"ttl"}, {"=5"}, {"parameters.=1"}, {"parameters={}", "parameters.a=1"}} {
		if _, err := SetsPatch(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
