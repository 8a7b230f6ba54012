package agent

import (
	"testing"

	"github.com/pgwarden/pgwarden/dcs"
)

// TestFailsafeMembers: a round asks every member on the published list,
// those with no record too (they cannot answer, so the round fails and
// the leader fences), and any other member the view shows.
func TestFailsafeMembers(t *testing.T) {
	v := &failsafeView{
		members:   []dcs.Member{{Name: "a", APIURL: "http://a"}, {Name: "d", APIURL: "http://d"}},
		published: []string{"a", "b", "c"},
	}
	got := failsafeMembers(v)
	names := map[string]string{}
	for _, m := range got {
		names[m.Name] = m.APIURL
	}
	if len(got) != 4 || names["a"] != "http://a" || names["d"] != "http://d" || names["b"] != "" || names["c"] != "" {
		t.Fatalf("asked %+v; want a and d with their URLs, b and c without", got)
	}
	if _, ok := names["b"]; !ok {
		t.Fatalf("published member b not asked: %+v", got)
	}
}
