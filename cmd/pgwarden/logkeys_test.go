package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every log line carries "member" = the node that wrote it (the root
// logger's With). A call that adds "member" for another node makes JSON
// logs lose the writer (a key appears twice, the last wins): other nodes
// are "peer", "candidate", "source".
func TestLogCallsDoNotReuseTheMemberKey(t *testing.T) {
	call := regexp.MustCompile(`\b[lL]og\.(Trace|Debug|Info|Warn|Error)\([^\n]*"member",`)
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if call.MatchString(line) {
				t.Errorf("%s:%d: a log call adds \"member\": %s", p, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
