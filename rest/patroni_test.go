package rest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/internal/testlog"
)

// TestPatroniStatusFields: /patroni carries what Patroni's does and tools
// read: dcs_last_seen, pending_restart, postmaster_start_time in
// PostgreSQL's format, the WAL senders as "replication", and a version.
func TestPatroniStatusFields(t *testing.T) {
	st := primaryStatus
	st.LastDCSContact = time.Unix(1700000000, 0)
	st.PendingRestart = true
	st.PostmasterStart = time.Date(2026, 11, 23, 3, 4, 5, 123456000, time.UTC)
	st.WALSenders = []agent.WALSender{{ApplicationName: "b", ClientAddr: "127.0.0.1", State: "streaming", SyncState: "async"}}
	s, err := NewServer(Options{Agent: &fakeAgent{st: st}, Version: "1.2.3"}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		DCSLastSeen     int64  `json:"dcs_last_seen"`
		PendingRestart  *bool  `json:"pending_restart"`
		PostmasterStart string `json:"postmaster_start_time"`
		Replication     []map[string]string
		Patroni         map[string]string
	}
	if err := json.Unmarshal(s.statusBody(s.o.Agent.Status()), &v); err != nil {
		t.Fatal(err)
	}
	if v.DCSLastSeen != 1700000000 || v.PendingRestart == nil || !*v.PendingRestart ||
		v.PostmasterStart != "2026-11-23 03:04:05.123456+00:00" || v.Patroni["version"] != "1.2.3" {
		t.Fatalf("/patroni: %+v", v)
	}
	want := map[string]string{"application_name": "b", "client_addr": "127.0.0.1", "state": "streaming", "sync_state": "async"}
	if len(v.Replication) != 1 || len(v.Replication[0]) != len(want) {
		t.Fatalf("replication = %v; want [%v]", v.Replication, want)
	}
	for k, w := range want {
		if v.Replication[0][k] != w {
			t.Fatalf("replication[0].%s = %q; want %q", k, v.Replication[0][k], w)
		}
	}
}

// TestClusterPatroniShape: in /cluster (not in etcd) a streaming replica
// is "streaming", api_url ends in /patroni, and members carry lsn,
// receive_lag and replay_lag; the member records are left as they are.
func TestClusterPatroniShape(t *testing.T) {
	c := &dcs.Cluster{
		Leader: &dcs.Leader{Name: "a"},
		Members: []dcs.Member{
			{Name: "a", Role: "primary", State: "running", APIURL: "http://127.0.0.1:8008", WALPosition: 0x3000100},
			{Name: "b", Role: "replica", State: "running", Streaming: true, APIURL: "http://127.0.0.1:8009/", WALPosition: 0x3000000, ReplayedLSN: 0x2FFFF00},
			{Name: "c", Role: "replica", State: "running", APIURL: "http://127.0.0.1:8010", WALPosition: 0x3000100, ReplayedLSN: 0x3000100},
		},
		Sync:   &dcs.Sync{Leader: "a", SyncStandby: []string{"c"}},
		Status: dcs.Status{LSN: 0x3000100},
	}
	body, _ := json.Marshal(clusterView(c, "main", false))
	var v struct{ Members []clusterMember }
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	byName := map[string]clusterMember{}
	for _, m := range v.Members {
		byName[m.Name] = m
	}
	a, b, cc := byName["a"], byName["b"], byName["c"]
	if a.Role != "leader" || a.State != "running" || a.APIURL != "http://127.0.0.1:8008/patroni" || a.LSN != "0/3000100" {
		t.Errorf("leader: %+v", a)
	}
	if b.State != "streaming" || b.APIURL != "http://127.0.0.1:8009/patroni" || b.LSN != "0/3000000" ||
		b.ReceiveLag == nil || *b.ReceiveLag != 0x100 || b.ReplayLag == nil || *b.ReplayLag != 0x200 || *b.Lag != 0x200 {
		t.Errorf("streaming replica: %s", body)
	}
	if cc.State != "running" || cc.Role != "sync_standby" || *cc.ReplayLag != 0 {
		t.Errorf("not streaming sync standby: %+v", cc)
	}
	if c.Members[1].State != "running" || c.Members[1].APIURL != "http://127.0.0.1:8009/" {
		t.Errorf("clusterView changed the member record: %+v", c.Members[1])
	}
}

// TestPatroniMetrics: with metrics_compat patroni, the series Patroni's
// dashboards query are there by name, with this node's values; without it,
// none of them.
func TestPatroniMetrics(t *testing.T) {
	st := replicaStatus
	st.Timeline, st.ServerVersion, st.PendingRestart, st.Pause = 4, 150010, true, true
	st.LastDCSContact = time.Unix(1700000000, 0)
	s, err := NewServer(Options{Agent: &fakeAgent{st: st}, Version: "0.3.1", MetricsCompat: "patroni"}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ts := serve(t, s)
	code, body := do(t, ts, "GET", "/metrics", "")
	l := `{name="b",scope="main"}`
	for _, want := range []string{
		"patroni_version" + l + " 301", "patroni_primary" + l + " 0", "patroni_master" + l + " 0", "patroni_replica" + l + " 1",
		"patroni_xlog_location" + l + " 0", "patroni_xlog_received_location" + l + " 4000", "patroni_xlog_replayed_location" + l + " 3000",
		"patroni_postgres_running" + l + " 1", "patroni_cluster_unlocked" + l + " 0", "patroni_postmaster_start_time" + l,
		"patroni_sync_standby" + l + " 0", "patroni_pending_restart" + l + " 1", "patroni_postgres_timeline" + l + " 4",
		"patroni_postgres_streaming" + l + " 1", "patroni_is_paused" + l + " 1", "patroni_dcs_last_seen" + l + " 1.7e+09",
		"patroni_postgres_server_version" + l + " 150010", "pgwarden_replica" + l + " 1",
	} {
		if code != 200 || !strings.Contains(body, "\n"+want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	plain := newTestServer(t, &fakeAgent{st: st}, nil)
	if _, body := do(t, plain, "GET", "/metrics", ""); strings.Contains(body, "patroni_") {
		t.Errorf("patroni_* series without metrics_compat")
	}
	if _, err := NewServer(Options{Agent: &fakeAgent{st: st}, MetricsCompat: "zabbix"}, testlog.New(t)); err == nil || !strings.Contains(err.Error(), "zabbix") {
		t.Errorf("metrics_compat zabbix: %v; want an error naming it", err)
	}
}

func TestVersionNumber(t *testing.T) {
	for v, want := range map[string]float64{"1.2.3": 10203, "v0.1.0-3-gabc": 100, "dev": 0, "762f3ce": 0, "1.2": 0} {
		if got := versionNumber(v); got != want {
			t.Errorf("versionNumber(%q) = %v; want %v", v, got, want)
		}
	}
}
