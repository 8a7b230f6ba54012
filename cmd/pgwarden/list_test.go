package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

var update = os.Getenv("UPDATE_GOLDEN") != ""

func sampleCluster() *dcs.Cluster {
	return &dcs.Cluster{
		Leader: &dcs.Leader{Name: "node2"},
		Members: []dcs.Member{
			{Name: "node1", ConnURL: "postgres://127.0.0.1:5432/postgres", Role: "replica", State: "running", Streaming: true, Timeline: 3, WALPosition: 50 << 20, ReplayedLSN: 48 << 20, Priority: 100},
			{Name: "node2", ConnURL: "postgres://127.0.0.1:5433/postgres", Role: "primary", State: "running", Timeline: 3, WALPosition: 52 << 20, Priority: 100},
			{Name: "node3", ConnURL: "postgres://127.0.0.1:5434/postgres", Role: "replica", State: "stopped", Timeline: 2, Priority: 0, Tags: map[string]string{"nofailover": "true", "dc": "b"},
				PendingRestart: true},
		},
		Initialize: "7301234567890123456",
		Status:     dcs.Status{LSN: 52 << 20},
		Failover:   &dcs.Failover{Kind: "switchover", Leader: "node2", Candidate: "node1", ScheduledAt: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (UPDATE_GOLDEN=1 writes it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestListTableGolden(t *testing.T) {
	var b bytes.Buffer
	if err := writeListTable(&b, buildList(sampleCluster(), "main", true)); err != nil {
		t.Fatal(err)
	}
	golden(t, "list.txt", b.Bytes())
}

func TestListJSON(t *testing.T) {
	var b bytes.Buffer
	if err := writeListJSON(&b, buildList(sampleCluster(), "main", false)); err != nil {
		t.Fatal(err)
	}
	var v listView
	if err := json.Unmarshal(b.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.Leader != "node2" || len(v.Members) != 3 || v.Members[0].Member != "node2" || v.Members[0].Role != "leader" {
		t.Fatalf("leader not first: %+v", v)
	}
	if v.Members[1].LagMB != 4 || v.Members[1].State != "streaming" {
		t.Fatalf("node1 lag/state wrong: %+v", v.Members[1])
	}
}
