package chaos

import (
	"strings"
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// w is an acknowledged write.
func w(id int64, node string, tl uint32, send, ack int) Write {
	return Write{ID: id, Src: node, Node: node, Timeline: tl, Send: ms(send), Ack: ms(ack)}
}

func all(ws ...Write) map[int64]bool {
	m := map[int64]bool{}
	for _, w := range ws {
		m[w.ID] = true
	}
	return m
}

func rules(r Report) string {
	var s []string
	for _, v := range r.Violations {
		s = append(s, v.Rule)
	}
	return strings.Join(s, ",")
}

func TestCheck(t *testing.T) {
	fault := func(kind string, start, heal, conv int, may bool) Fault {
		return Fault{Kind: kind, Start: ms(start), Heal: ms(heal), Converged: ms(conv), MayFailover: may,
			LeaderBefore: "n1", LeaderAfter: "n1", TLBefore: 1, TLAfter: 1}
	}
	kill := fault("kill-agent", 1000, 2000, 3000, true)
	kill.LeaderAfter, kill.TLAfter = "n2", 2
	clean := []Write{w(1, "n1", 1, 900, 910), w(2, "n1", 1, 950, 960), w(3, "n2", 2, 1500, 1510), w(4, "n2", 2, 1600, 1610)}
	cases := []struct {
		name    string
		writes  []Write
		faults  []Fault
		present map[int64]bool
		sync    bool
		want    string
		lost    int
	}{
		{"a clean failover", clean, []Fault{kill}, all(clean...), true, "", 0},
		{"old primary takes a write after the new one acked",
			append(clean[:4:4], w(5, "n1", 1, 1520, 1525)), []Fault{kill}, all(clean...), false, "overlap", 1},
		{"a busy statement sent before, acknowledged after the new primary's first write",
			append(clean[:4:4], w(5, "n1", 1, 500, 1700)), []Fault{kill}, all(clean...), false, "overlap", 1},
		{"acknowledged just before the first write of the new epoch",
			append(clean[:4:4], w(5, "n1", 1, 500, 1505)), []Fault{kill}, all(clean...), false, "", 1},
		{"two nodes on one timeline",
			[]Write{w(1, "n1", 2, 10, 20), w(2, "n2", 2, 30, 40)}, []Fault{fault("x", 0, 50, 60, true)}, all(w(1, "", 0, 0, 0), w(2, "", 0, 0, 0)), false, "overlap", 0},
		{"async loss at an unplanned failover is counted, not a violation",
			clean, []Fault{kill}, all(clean[2:]...), false, "", 2},
		{"sync loss is a violation", clean, []Fault{kill}, all(clean[2:]...), true, "lost", 2},
		{"loss across a planned switchover is a violation", clean,
			[]Fault{func() Fault { f := kill; f.Kind, f.Planned = "switchover", true; return f }()}, all(clean[2:]...), false, "lost", 2},
		{"a busy statement sent into one fault is lost by the next failover",
			append(clean[:4:4], w(8, "n2", 2, 1900, 3200)), []Fault{kill, func() Fault {
				f := kill
				f.Start, f.Heal, f.Converged = ms(3500), ms(3600), ms(3700)
				f.LeaderBefore, f.TLBefore, f.LeaderAfter, f.TLAfter = "n2", 2, "n1", 3
				return f
			}()}, all(clean...), false, "", 1},
		{"a row lost in a fault that moved no primary is a violation", clean,
			[]Fault{fault("cut-replica-etcd", 1000, 2000, 3000, false)}, all(clean[1:]...), false, "lost", 1},
		{"an unread timeline is not a failover", clean,
			[]Fault{func() Fault { f := fault("rest-partition", 1000, 2000, 3000, false); f.TLAfter = 0; return f }()}, all(clean...), false, "", 0},
		{"a fault that did not do what it says fails the campaign", clean,
			[]Fault{func() Fault {
				f := fault("cut-replication", 1000, 2000, 3000, false)
				f.Ineffective = "2 replicas still streaming"
				return f
			}()}, all(clean...), false, "ineffective", 0},
		{"loss after the last heal is a violation", append(clean[:4:4], w(9, "n2", 2, 4000, 4010)), []Fault{kill}, all(clean...), false, "lost", 1},
		{"a leader change under a benign fault is a false failover", clean,
			[]Fault{func() Fault { f := kill; f.Kind, f.MayFailover = "latency-spike", false; return f }()}, all(clean...), false, "false-failover", 0},
		{"no convergence", clean, []Fault{func() Fault { f := kill; f.Converged, f.ConvergeErr = 0, "two primaries"; return f }()}, all(clean...), false, "converge", 0},
		{"a failed write proves nothing", append(clean[:4:4], Write{ID: 7, Src: "n1", Send: ms(1700)}), []Fault{kill}, all(clean...), true, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Check(c.writes, c.faults, c.present, c.sync)
			if got := rules(r); got != c.want {
				t.Fatalf("violations %q, want %q: %+v", got, c.want, r.Violations)
			}
			if r.Lost != c.lost {
				t.Fatalf("lost %d, want %d", r.Lost, c.lost)
			}
			if c.name == "a busy statement sent into one fault is lost by the next failover" && r.LostByFault[1] != 1 {
				t.Fatalf("lost by fault %v; want the row charged to the second fault", r.LostByFault)
			}
		})
	}
}

func TestCheckTable(t *testing.T) {
	f := Fault{Kind: "kill-agent", Start: ms(1000), Heal: ms(2000), Converged: ms(2500), MayFailover: true, LeaderBefore: "n1", LeaderAfter: "n2", TLBefore: 1, TLAfter: 2}
	ws := []Write{w(1, "n1", 1, 900, 1000), w(2, "n2", 2, 1700, 1800), w(3, "n2", 2, 2400, 2450)}
	r := Check(ws, []Fault{f}, all(ws...), true)
	if len(r.Kinds) != 1 || r.Kinds[0].MaxUnavailable != ms(800) || r.Kinds[0].MaxConverge != ms(500) || r.Kinds[0].Failovers != 1 {
		t.Fatalf("table %+v", r.Kinds)
	}
	if len(r.Epochs) != 2 || r.Epochs[1].Node != "n2" || r.Epochs[1].First != ms(1800) {
		t.Fatalf("epochs %+v", r.Epochs)
	}
	if s := Around(ws, ms(1800), ms(1000), 10); !strings.Contains(s, "id 2 ") {
		t.Fatalf("around:\n%s", s)
	}
}

// TestClassify: the replication cut must tell a walreceiver's startup
// packet from a client's, after an SSL request and across chunk borders.
func TestClassify(t *testing.T) {
	startup := func(params ...string) []byte {
		body := []byte{0, 3, 0, 0}
		for _, p := range params {
			body = append(body, p...)
			body = append(body, 0)
		}
		body = append(body, 0)
		n := len(body) + 4
		return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, body...)
	}
	ssl := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	cases := []struct {
		name          string
		b             []byte
		repl, decided bool
	}{
		{"walreceiver", startup("user", "replicator", "replication", "true"), true, true},
		{"pg_basebackup", append(append([]byte{}, ssl...), startup("user", "r", "replication", "database")...), true, true},
		{"client", startup("user", "postgres", "database", "postgres"), false, true},
		{"replication off", startup("replication", "false"), false, true},
		{"only the SSL request so far", ssl, false, false},
		{"half a startup", startup("user", "replicator", "replication", "true")[:10], false, false},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), false, true},
	}
	for _, c := range cases {
		repl, decided := classify(c.b)
		if repl != c.repl || decided != c.decided {
			t.Errorf("%s: repl %v decided %v, want %v %v", c.name, repl, decided, c.repl, c.decided)
		}
	}
}
