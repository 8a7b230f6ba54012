package agent

import (
	"maps"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/internal/testlog"
)

// TestSetLiveReachesRecordAndStatus: a configuration handed over by
// SetLive (SIGHUP) is what the next step publishes, in the member record
// the other members decide by and in the snapshot the health checks read;
// the caller's map is not shared with the loop.
func TestSetLiveReachesRecordAndStatus(t *testing.T) {
	ctx := t.Context()
	mc := clusterLedBy(t, "b")
	store := mc.Client("a", 10*time.Second)
	if _, err := store.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	a := New(Settings{Node: Node{Name: "a", Priority: 100}, ConnectAddress: "127.0.0.1:5432", Tags: map[string]string{}},
		Deps{DCS: store, Postgres: &loggingPG{log: &callLog{}}}, testlog.New(t))
	tags := map[string]string{"nofailover": "true", "noloadbalance": "true", "dc": "b"}
	a.SetLive(Live{Priority: 0, NoFailover: true, ReplicateFrom: "b", Tags: tags})
	tags["dc"] = "changed by the caller"
	a.mu.Lock()
	a.takeLive()
	o := a.observe(ctx)
	pg := PGState{Running: true, Answering: true, InRecovery: true, State: "running"}
	a.publish(ctx, o, Decision{Action: ActWait}, Outcome{PG: pg}, time.Now())
	a.mu.Unlock()

	want := map[string]string{"nofailover": "true", "noloadbalance": "true", "dc": "b"}
	st := a.Status()
	if st.Priority != 0 || !st.NoFailover || !st.NoLoadBalance || !maps.Equal(st.Tags, want) {
		t.Fatalf("status after SetLive: priority %d nofailover %v noloadbalance %v tags %v; want 0, true, true, %v",
			st.Priority, st.NoFailover, st.NoLoadBalance, st.Tags, want)
	}
	c, err := mc.Client("o", time.Second).Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := c.Member("a")
	if m == nil || m.Priority != 0 || !m.NoFailover || !maps.Equal(m.Tags, want) {
		t.Fatalf("member record after SetLive: %+v; want priority 0, nofailover, tags %v", m, want)
	}
	if o.Node.ReplicateFrom != "b" {
		t.Fatalf("observation's replicatefrom %q, want b", o.Node.ReplicateFrom)
	}
}
