package agent

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/config"
)

// The hook events the agent fires and the ones config accepts are one
// vocabulary: an event fired but unknown cannot be subscribed to, one known
// but never fired is a hook that never runs. (The backup package fires
// backup, drill and their _failed forms.)
func TestHookEventsAreOneVocabulary(t *testing.T) {
	fired := map[string]bool{}
	lit := regexp.MustCompile(`a\.fire\("([a-z_]+)"`)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
			fired[m[1]] = true
		}
	}
	// promote() fires its reason as the event too.
	fired["failover"] = fired["promote"]
	for _, e := range []string{"backup", "backup_failed", "drill", "drill_failed"} {
		fired[e] = true
	}
	for e := range fired {
		if !slices.Contains(config.KnownEvents, e) {
			t.Errorf("event %q is fired but config does not know it", e)
		}
	}
	for _, e := range config.KnownEvents {
		if !fired[e] {
			t.Errorf("event %q is known to config but never fired", e)
		}
	}
}
