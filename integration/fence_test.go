//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/postgres/pgproc"
)

// The fence on real PostgreSQL 15: what it kills, when a silent primary is
// fenced, and what the health checks say about a dead postmaster.

func (n *node) dataDir() string { return filepath.Join(n.dir, "data") }

// busyStatement starts a CPU-bound autocommit INSERT on n (it would run for
// minutes) and returns its backend PID and a channel with its result.
func busyStatement(t *testing.T, n *node) (int, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	conn, err := n.connect(ctx)
	if err != nil {
		t.Fatalf("connect to %s: %v", n.name, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "INSERT INTO busy SELECT g FROM generate_series(1, 2000000000) g")
		done <- err
	}()
	harness.WaitFor(t, 10*time.Second, "the busy statement running", func() (bool, error) {
		var state string
		err := n.queryRow(fmt.Sprintf("SELECT state FROM pg_stat_activity WHERE pid = %d", pid), &state)
		return err == nil && state == "active", fmt.Errorf("state %q: %v", state, err)
	})
	return pid, done
}

// TestFenceLeavesNoBackend: the leader's agent is frozen (SIGSTOP) while a
// CPU-bound autocommit INSERT runs on its primary. The watchdog fences at
// the lease deadline: the statement's client gets an error (it is never
// acknowledged), and 1 s after the postmaster died no live process has the
// data directory as its working directory. (Before: the watchdog killed
// the postmaster's process group; every backend calls setsid(), so the
// busy backend lived on and its client received INSERT 0 N seconds later.)
func TestFenceLeavesNoBackend(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(t, p.exec("CREATE TABLE busy (id bigint)"))
	backend, done := busyStatement(t, p)
	pm := p.postmasterPID()
	frozen := time.Now()
	must(t, p.agent.Pause())
	defer p.agent.Resume()

	var fenced time.Time
	harness.WaitFor(t, 30*time.Second, "the watchdog fences the frozen leader's postmaster", func() (bool, error) {
		if !pgproc.Alive(pm) {
			fenced = time.Now()
			return true, nil
		}
		return false, fmt.Errorf("postmaster %d alive %s after the freeze", pm, time.Since(frozen).Round(time.Millisecond))
	})
	t.Logf("fenced %.2fs after the freeze (ttl 5, safety margin 2)", fenced.Sub(frozen).Seconds())
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the busy INSERT was acknowledged after the fence")
		}
		t.Logf("busy statement ended with: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the busy statement's client got no answer 10 s after the fence")
	}
	time.Sleep(time.Until(fenced.Add(time.Second))) // the moment the issue measures at
	left, err := pgproc.Processes(p.dataDir())
	must(t, err)
	if len(left) != 0 {
		t.Fatalf("1 s after the fence, live processes work in %s: %v (busy backend %d)", p.dataDir(), left, backend)
	}
	if pgproc.Alive(backend) {
		t.Fatalf("busy backend %d alive after the fence", backend)
	}
	np := c.primary(60*time.Second, p)
	if n, err := np.queryInt("SELECT count(*) FROM busy"); err != nil || n != 0 {
		t.Fatalf("new primary has %d rows of the fenced statement (%v); want 0", n, err)
	}
}

// TestMutePrimary: every connection slot of the
// leader's PostgreSQL is taken and the agent's own session terminated, so
// the agent's status query fails. The server still runs (and accepts
// writes from its sessions): the leader keeps its key while it can renew,
// no replica is promoted, it says state "unresponsive", /primary answers
// 503 (the agent cannot vouch for it), and its watchdog stays armed (a
// freeze of the agent now is fenced). (Before: a failed status query read
// as "starting", not running; the leader released its key after ttl with
// PostgreSQL running, a replica was promoted, and a write through a held
// session succeeded beside it.)
func TestMutePrimary(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(t, p.exec("CREATE TABLE mute (id int)"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var held []*pgx.Conn
	defer func() {
		for _, c := range held {
			c.Close(context.Background())
		}
	}()
	// Take every slot (max_connections 50; the superuser may use the
	// reserved ones too).
	for i := 0; i < 60; i++ {
		conn, err := p.connect(ctx)
		if err != nil {
			if !strings.Contains(err.Error(), "too many clients") && !strings.Contains(err.Error(), "remaining connection slots") {
				t.Fatalf("connection %d: %v", i, err)
			}
			break
		}
		held = append(held, conn)
	}
	if len(held) < 40 {
		t.Fatalf("only %d connections held", len(held))
	}
	// End the agent's own session and take its slot before the agent
	// reconnects.
	if _, err := held[0].Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgwarden' AND pid <> pg_backend_pid()"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		conn, err := p.connect(ctx)
		if err != nil {
			break
		}
		held = append(held, conn)
	}
	harness.WaitFor(t, 20*time.Second, "the leader reports itself unresponsive", func() (bool, error) {
		st := p.status()
		return st != nil && st["state"] == "unresponsive", fmt.Errorf("state %v", st["state"])
	})
	if code := p.probe("/primary"); code != 503 {
		t.Fatalf("/primary on the unresponsive leader = %d; want 503", code)
	}
	if code := p.probe("/health"); code != 200 {
		t.Fatalf("/health on the unresponsive leader = %d; want 200 (its postmaster runs)", code)
	}
	// Three ttl: no failover, the key stays, writes through a held
	// session go to the one primary.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.nodes {
			if n == p {
				continue
			}
			var rec bool
			if err := n.queryRow("SELECT pg_is_in_recovery()", &rec); err == nil && !rec {
				t.Fatalf("%s was promoted while the unresponsive leader ran", n.name)
			}
		}
		if _, err := held[1].Exec(ctx, "INSERT INTO mute VALUES (1)"); err != nil {
			t.Fatalf("write through a held session on the leader: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if st := p.status(); st["leader"] != p.name && st["is_leader"] != true {
		t.Fatalf("the unresponsive leader lost its key: %v", st)
	}
	// Still guarded: freeze its agent and the watchdog fences it.
	pm := p.postmasterPID()
	must(t, p.agent.Pause())
	harness.WaitFor(t, 20*time.Second, "the watchdog fences the unresponsive primary of a frozen agent", func() (bool, error) {
		return !pgproc.Alive(pm), fmt.Errorf("postmaster %d alive", pm)
	})
	if _, err := held[1].Exec(ctx, "INSERT INTO mute VALUES (2)"); err == nil {
		t.Fatal("a held session wrote after the fence")
	}
	// Thawed before its lease ran out, the agent may keep the key and
	// restart in place; either way one primary.
	must(t, p.agent.Resume())
	c.primary(60 * time.Second)
}

// TestStartPrimaryRunsWatched: the leader's PostgreSQL is killed and its
// start takes 3 x ttl (a wrapper around postgres in its bin_dir sleeps
// before exec'ing the real one, as a long crash recovery would keep it
// from accepting connections). The keeper renews the lease throughout: the
// leader keeps its key, no replica is promoted, and it comes back as the
// primary. (Before: the start ran with no renewals; the lease expired,
// a replica was promoted, and the restarted leader then armed its watchdog
// on a fresh lease: two primaries.)
func TestStartPrimaryRunsWatched(t *testing.T) {
	bin := slowBinDir(t)
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2, binDir: bin})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(t, os.WriteFile(filepath.Join(p.dir, "slow-start"), []byte("15"), 0o600))
	pm := p.postmasterPID()
	killed := time.Now()
	must(t, syscall.Kill(pm, syscall.SIGKILL))
	harness.WaitFor(t, 10*time.Second, "the slow start under way", func() (bool, error) {
		_, err := os.Stat(filepath.Join(p.dir, "slow-start.running"))
		return err == nil, err
	})
	must(t, os.Remove(filepath.Join(p.dir, "slow-start")))
	harness.WaitFor(t, 90*time.Second, "the leader accepting writes again", func() (bool, error) {
		for _, n := range c.nodes {
			if n == p {
				continue
			}
			var rec bool
			if err := n.queryRow("SELECT pg_is_in_recovery()", &rec); err == nil && !rec {
				return false, fmt.Errorf("%s was promoted during the leader's slow start", n.name)
			}
		}
		if err := p.exec("SELECT 1"); err != nil {
			return false, err
		}
		return p.probe("/primary") == 200, fmt.Errorf("leader /primary = %d", p.probe("/primary"))
	})
	t.Logf("leader back %.1fs after its postmaster was killed (start slowed by 15 s, ttl 5)", time.Since(killed).Seconds())
	for _, n := range c.nodes {
		if n == p {
			continue
		}
		var rec bool
		if err := n.queryRow("SELECT pg_is_in_recovery()", &rec); err == nil && !rec {
			t.Fatalf("%s is a primary beside the leader", n.name)
		}
	}
}

// slowBinDir is a copy of PostgreSQL's bin_dir whose postgres, while the
// node directory holds a "slow-start" file, sleeps that many seconds
// before it execs the real one.
func slowBinDir(t *testing.T) string {
	t.Helper()
	real := harness.PgBinDir(t)
	dir := harness.Dir(t, "bin")
	ents, err := os.ReadDir(real)
	must(t, err)
	for _, e := range ents {
		switch e.Name() {
		case "postgres":
		case "pg_ctl":
			// A copy, not a link: pg_ctl runs the postgres beside its own
			// resolved path.
			b, err := os.ReadFile(filepath.Join(real, e.Name()))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, e.Name()), b, 0o755))
		default:
			must(t, os.Symlink(filepath.Join(real, e.Name()), filepath.Join(dir, e.Name())))
		}
	}
	script := fmt.Sprintf(`#!/bin/sh
# The data directory is the argument after -D.
d=""
prev=""
for a in "$@"; do [ "$prev" = "-D" ] && d="$a"; prev="$a"; done
f="$(dirname "$d")/slow-start"
if [ -n "$d" ] && [ -f "$f" ]; then
	n="$(cat "$f")"
	touch "$f.running"
	sleep "$n"
	rm -f "$f.running"
fi
exec %s/postgres "$@"
`, real)
	must(t, os.WriteFile(filepath.Join(dir, "postgres"), []byte(script), 0o755))
	return dir
}

// TestPrimaryAnswerEndsWithThePostmaster: kill -9 of the leader's
// postmaster. /primary answers 503 at once (the agent watches its
// postmaster through a pidfd and swaps its snapshot), not 200 until the
// next loop while connections are refused. (Before: about 1.6 s, 11
// probes, of 200s after the kill.)
func TestPrimaryAnswerEndsWithThePostmaster(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 10, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	pm := p.postmasterPID()
	must(t, syscall.Kill(pm, syscall.SIGKILL))
	killed := time.Now()
	var late []time.Duration
	probes := 0
	// Until the agent has restarted its postmaster (a new one answers
	// /primary 200 rightly).
	for time.Since(killed) < 5*time.Second {
		if np := p.postmasterPID(); np != pm && np > 0 && pgproc.Alive(np) {
			break
		}
		probes++
		if code := p.probe("/primary"); code == 200 {
			late = append(late, time.Since(killed))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d probes while no postmaster ran", probes)
	t.Logf("/primary answered 200 %d times after the kill: %v", len(late), late)
	// The pidfd sees the death within a millisecond; allow a probe that
	// was already on its way.
	for _, d := range late {
		if d > 100*time.Millisecond {
			t.Fatalf("/primary answered 200 %s after the postmaster was killed", d.Round(time.Millisecond))
		}
	}
}

// TestDeadAgentHandsBackTheKey: the leader's agent is killed (SIGKILL)
// while its PostgreSQL runs. Its watchdog fences at once and then hands
// the leader key back, so a replica is promoted long before the lease
// (ttl 20) could expire. (Before: the key stayed until the lease
// expired, about ttl after the kill, with no primary meanwhile.)
func TestDeadAgentHandsBackTheKey(t *testing.T) {
	const ttl = 20
	c := newCluster(t, clusterOpts{ttl: ttl, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	pm := p.postmasterPID()
	killed := time.Now()
	must(t, syscall.Kill(p.agent.PID(), syscall.SIGKILL))
	harness.WaitFor(t, 10*time.Second, "the dead agent's watchdog fences its postmaster", func() (bool, error) {
		return !pgproc.Alive(pm), fmt.Errorf("postmaster %d alive", pm)
	})
	fenced := time.Since(killed)
	np := c.primary(ttl*time.Second, p)
	took := time.Since(killed)
	t.Logf("postmaster gone %s after the agent's kill; %s primary %.2fs after it (ttl %d)", fenced.Round(time.Millisecond), np.name, took.Seconds(), ttl)
	// The lease alone would hold the key for at least ttl - loop_wait.
	if took > ttl/2*time.Second {
		t.Fatalf("new primary %.1fs after the leader's agent died: the key was not handed back (ttl %d)", took.Seconds(), ttl)
	}
	harness.WaitFor(t, 10*time.Second, "the watchdog logs the hand-back", func() (bool, error) {
		l, _ := p.log.Since(0)
		return strings.Contains(l, "leader key handed back"), nil
	})
}
