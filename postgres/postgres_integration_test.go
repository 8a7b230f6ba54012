//go:build integration

package postgres

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/internal/testlog"
	"github.com/pgwarden/pgwarden/postgres/pgstate"
	"github.com/pgwarden/pgwarden/wal"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

type tnode struct {
	*Server
	port int
}

func newNode(t *testing.T, name string) *tnode {
	t.Helper()
	dir := harness.Dir(t, name)
	port := harness.Port(t)
	s := New(Config{
		BinDir: harness.PgBinDir(t), DataDir: filepath.Join(dir, "data"), Listen: fmt.Sprintf("127.0.0.1:%d", port),
		SuperUser: "postgres", SuperPassword: "su'pass", ReplUser: "replicator", ReplPassword: "rep pass",
		Parameters: map[string]string{"unix_socket_directories": dir, "shared_buffers": "16MB", "fsync": "off"},
		AppName:    name,
	}, testlog.New(t).Named(name))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.Stop(ctx, "immediate")
	})
	return &tnode{Server: s, port: port}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func (n *tnode) up(slot string) Upstream {
	return Upstream{Host: "127.0.0.1", Port: n.port, Slot: slot}
}

func (n *tnode) count(t *testing.T) int64 {
	t.Helper()
	var c int64
	err := n.withConn(ctxT(t, 5*time.Second), func(conn *pgx.Conn) error {
		return conn.QueryRow(context.Background(), "SELECT count(*) FROM t").Scan(&c)
	})
	if err != nil {
		return -1
	}
	return c
}

func status(t *testing.T, n *tnode) pgstate.Server {
	t.Helper()
	st, err := n.Status(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// TestReplicationLifecycle walks one primary and two standbys through clone,
// streaming, promotion, follow by reload, rewind, and a clean switchover's
// shutdown checkpoint.
func TestReplicationLifecycle(t *testing.T) {
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	if st := status(t, a); !st.DataEmpty || st.Running {
		t.Fatalf("empty node status %+v", st)
	}
	must(t, a.Bootstrap(ctxT(t, 60*time.Second)))
	st := status(t, a)
	if !st.Running || st.InRecovery || st.Timeline != 1 || st.SystemID == "" || st.ServerVersion < 150000 {
		t.Fatalf("bootstrapped primary status %+v", st)
	}
	_, _, err := a.SyncSlots(ctxT(t, 10*time.Second), []string{"b", "c"}, nil)
	must(t, err)
	must(t, a.execSQL(ctxT(t, 5*time.Second), "CREATE TABLE t (id int)"))

	for _, n := range []*tnode{b, c} {
		must(t, n.Clone(ctxT(t, 60*time.Second), a.up(n.cfg.AppName)))
		up := a.up(n.cfg.AppName)
		must(t, n.Start(ctxT(t, 60*time.Second), &up))
	}
	must(t, a.execSQL(ctxT(t, 5*time.Second), "INSERT INTO t VALUES (1)"))
	start := time.Now()
	harness.WaitFor(t, 2*time.Second, "row streamed to b", func() (bool, error) { return b.count(t) == 1, nil })
	t.Logf("row visible on the standby after %s", time.Since(start).Round(time.Millisecond))
	must(t, a.Checkpoint(ctxT(t, 10*time.Second)))
	primary := status(t, a)
	harness.WaitFor(t, 10*time.Second, "b received the primary's position", func() (bool, error) {
		s := status(t, b)
		return s.Streaming && s.Received == primary.WAL, fmt.Errorf("b %+v, primary at %s", s, primary.WAL)
	})
	sb := status(t, b)
	if sb.Upstream != fmt.Sprintf("127.0.0.1:%d", a.port) || !sb.InRecovery || sb.SystemID != primary.SystemID {
		t.Fatalf("standby status %+v", sb)
	}
	slots, err := a.slots(ctxT(t, 5*time.Second))
	if err != nil || !slots["b"] || !slots["c"] {
		t.Fatalf("slots on primary %v %v; want b and c active", slots, err)
	}

	// A clean stop: the standbys have everything up to the shutdown checkpoint.
	must(t, a.Stop(ctxT(t, 30*time.Second), "fast"))
	ckpt, err := a.ShutdownCheckpoint(ctxT(t, 10*time.Second))
	must(t, err)
	handover, err := a.HandoverLSN(ctxT(t, 10*time.Second))
	must(t, err)
	// A standby that received the record has a position past its start:
	// ">= handover" is that test, "== ckpt" would never hold.
	if handover != ckpt+1 {
		t.Fatalf("handover position %s, want one past the checkpoint record's start %s", handover, ckpt)
	}
	harness.WaitFor(t, 5*time.Second, "b has the shutdown checkpoint", func() (bool, error) {
		r := status(t, b).Received
		return r >= handover, fmt.Errorf("b received %s, handover needs %s", r, handover)
	})
	sa := status(t, a)
	if sa.Running || sa.State != "stopped" || !sa.WasPrimary {
		t.Fatalf("cleanly stopped primary status %+v", sa)
	}

	// Promote b: writable on a new timeline.
	must(t, b.Promote(ctxT(t, 30*time.Second)))
	sb = status(t, b)
	if sb.InRecovery || sb.Timeline != 2 {
		t.Fatalf("promoted status %+v; want primary on timeline 2", sb)
	}
	must(t, b.execSQL(ctxT(t, 5*time.Second), "INSERT INTO t VALUES (2)"))
	if _, _, err := b.SyncSlots(ctxT(t, 10*time.Second), []string{"a", "c"}, nil); err != nil {
		t.Fatal(err)
	}

	// c follows b by reload: the postmaster is not restarted.
	before := status(t, c).PostmasterStart
	must(t, c.Follow(ctxT(t, 30*time.Second), b.up("c")))
	harness.WaitFor(t, 20*time.Second, "c streams from b", func() (bool, error) {
		s := status(t, c)
		return s.Streaming && s.Upstream == fmt.Sprintf("127.0.0.1:%d", b.port) && c.count(t) == 2, fmt.Errorf("c %+v", s)
	})
	if after := status(t, c).PostmasterStart; !after.Equal(before) {
		t.Fatalf("follow restarted c (postmaster start %s -> %s)", before, after)
	}

	// a diverges (written as a primary after b's promotion), then is rewound.
	must(t, a.Start(ctxT(t, 60*time.Second), nil))
	must(t, a.execSQL(ctxT(t, 5*time.Second), "INSERT INTO t VALUES (99)"))
	pf, _ := a.postmaster()
	pid := pf.PID
	must(t, syscall.Kill(pid, syscall.SIGKILL)) // crashed, not cleanly stopped
	harness.WaitFor(t, 10*time.Second, "a seen crashed", func() (bool, error) {
		s := status(t, a)
		return s.State == "crashed" && !s.Running, fmt.Errorf("a %+v", s)
	})
	must(t, a.Rewind(ctxT(t, 120*time.Second), b.up("a")))
	up := b.up("a")
	must(t, a.Start(ctxT(t, 60*time.Second), &up))
	must(t, b.execSQL(ctxT(t, 5*time.Second), "INSERT INTO t VALUES (3)"))
	harness.WaitFor(t, 20*time.Second, "rewound a streams from b", func() (bool, error) {
		return status(t, a).Streaming && a.count(t) == 3, fmt.Errorf("a has %d rows", a.count(t))
	})
	var diverged int64
	must(t, a.withConn(ctxT(t, 5*time.Second), func(conn *pgx.Conn) error {
		return conn.QueryRow(context.Background(), "SELECT count(*) FROM t WHERE id = 99").Scan(&diverged)
	}))
	if diverged != 0 {
		t.Fatal("the diverging row survived the rewind")
	}
}

// TestCrashedStartAndWipe: kill -9 of the postmaster is seen as crashed;
// Start succeeds right after (zombie lock file retried); Wipe empties.
func TestCrashedStartAndWipe(t *testing.T) {
	a := newNode(t, "solo")
	must(t, a.Bootstrap(ctxT(t, 60*time.Second)))
	for range 2 {
		pf, alive := a.postmaster()
		if !alive {
			t.Fatal("postmaster not alive")
		}
		must(t, syscall.Kill(pf.PID, syscall.SIGKILL))
		harness.WaitFor(t, 10*time.Second, "crash seen", func() (bool, error) {
			s := status(t, a)
			return s.State == "crashed", fmt.Errorf("state %s", s.State)
		})
		must(t, a.Start(ctxT(t, 60*time.Second), nil))
		if s := status(t, a); !s.Running || s.InRecovery {
			t.Fatalf("restarted status %+v", s)
		}
	}
	if err := a.Wipe(ctxT(t, 5*time.Second)); err == nil {
		t.Fatal("wiped a running server")
	}
	must(t, a.Stop(ctxT(t, 30*time.Second), "fast"))
	must(t, a.Stop(ctxT(t, 30*time.Second), "fast")) // stopping a stopped server is fine
	must(t, a.Wipe(ctxT(t, 5*time.Second)))
	if s := status(t, a); !s.DataEmpty {
		t.Fatalf("after wipe %+v", s)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestStandbyLeftToStart: a standby whose WAL
// to a consistent state is still on its upstream, streamed from a slot the
// upstream has not created (as when a former primary rejoins after its
// member key expired), cannot accept connections. Start returns anyway
// once the bound passes, with the server running: the HA loop it would
// hold publishes the member record from which the slot is created, and
// then the standby catches up.
func TestStandbyLeftToStart(t *testing.T) {
	a, b := newNode(t, "upstream"), newNode(t, "late")
	must(t, a.Bootstrap(ctxT(t, 60*time.Second)))
	must(t, a.execSQL(ctxT(t, 5*time.Second), "CREATE TABLE t (id int)"))
	// A base backup without its WAL: consistency needs the upstream.
	env := []string{"PGPASSWORD=" + a.cfg.ReplPassword}
	_, err := b.run(ctxT(t, 60*time.Second), env, "pg_basebackup", "-D", b.cfg.DataDir, "-h", "127.0.0.1",
		"-p", strconv.Itoa(a.port), "-U", a.cfg.ReplUser, "-X", "none", "-c", "fast", "--no-sync")
	must(t, err)
	must(t, os.Chmod(b.cfg.DataDir, 0o700))
	must(t, a.execSQL(ctxT(t, 5*time.Second), "INSERT INTO t VALUES (1)"))

	up := a.up("late")
	start := time.Now()
	err = b.Start(ctxT(t, 90*time.Second), &up)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("start of a standby without its slot: %v (after %s)", err, took)
	}
	t.Logf("start returned after %s", took.Round(time.Millisecond))
	if took > 20*time.Second {
		t.Fatalf("start held the caller %s, want about 10s", took)
	}
	if _, alive := b.postmaster(); !alive {
		t.Fatal("the standby is not running")
	}
	if b.count(t) != -1 {
		t.Fatal("the standby answered a query before it had the WAL to be consistent")
	}
	_, _, err = a.SyncSlots(ctxT(t, 10*time.Second), []string{"late"}, nil)
	must(t, err)
	harness.WaitFor(t, 30*time.Second, "the standby streams from its new slot and is consistent", func() (bool, error) {
		return b.count(t) == 1, fmt.Errorf("standby has %d rows", b.count(t))
	})
}

// TestCatalogReads: the reads backup and the CLI make on a server they
// connected to themselves, on a primary and on a standby whose replay is
// paused, then resumed.
func TestCatalogReads(t *testing.T) {
	a, b := newNode(t, "cat-primary"), newNode(t, "cat-standby")
	must(t, a.Bootstrap(ctxT(t, 60*time.Second)))
	must(t, a.execSQL(ctxT(t, 5*time.Second), "CREATE DATABASE app"))
	must(t, b.Clone(ctxT(t, 60*time.Second), a.up("")))
	up := a.up("")
	must(t, b.Start(ctxT(t, 60*time.Second), &up))

	ctx := ctxT(t, 30*time.Second)
	must(t, a.withConn(ctx, func(c *pgx.Conn) error {
		dbs, err := Databases(ctx, c)
		if err != nil || fmt.Sprint(dbs) != "[app postgres]" {
			t.Fatalf("databases = %v, %v; want [app postgres] (templates left out)", dbs, err)
		}
		for name, want := range map[string]bool{"app": true, "template1": true, "nope": false} {
			if ok, err := DatabaseExists(ctx, c, name); err != nil || ok != want {
				t.Fatalf("database %s exists = %v, %v; want %v", name, ok, err, want)
			}
		}
		if rec, err := InRecovery(ctx, c); err != nil || rec {
			t.Fatalf("primary in recovery = %v, %v", rec, err)
		}
		if rec, paused, err := ReplayPaused(ctx, c); err != nil || rec || paused {
			t.Fatalf("primary replay paused = %v %v, %v", rec, paused, err)
		}
		lsn, err := CurrentLSN(ctx, c)
		if _, perr := wal.ParseLSN(lsn); err != nil || perr != nil {
			t.Fatalf("current lsn = %q, %v, %v", lsn, err, perr)
		}
		version, pos, err := VersionAndPosition(ctx, c)
		if _, perr := wal.ParseLSN(pos); err != nil || perr != nil || !strings.HasPrefix(version, "15") {
			t.Fatalf("version and position = %q %q, %v, %v", version, pos, err, perr)
		}
		return nil
	}))

	harness.WaitFor(t, 30*time.Second, "standby accepts connections", func() (bool, error) {
		return b.withConn(ctx, func(c *pgx.Conn) error { return nil }) == nil, nil
	})
	must(t, b.withConn(ctx, func(c *pgx.Conn) error {
		if rec, err := InRecovery(ctx, c); err != nil || !rec {
			t.Fatalf("standby in recovery = %v, %v", rec, err)
		}
		if _, err := c.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
			return err
		}
		// A pause is requested first and takes effect at the next record.
		harness.WaitFor(t, 10*time.Second, "replay paused", func() (bool, error) {
			rec, paused, err := ReplayPaused(ctx, c)
			return err == nil && rec && paused, fmt.Errorf("in recovery %v, paused %v, %v", rec, paused, err)
		})
		if _, err := c.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
			return err
		}
		if rec, paused, err := ReplayPaused(ctx, c); err != nil || !rec || paused {
			t.Fatalf("resumed standby replay paused = %v %v, %v", rec, paused, err)
		}
		_, pos, err := VersionAndPosition(ctx, c)
		if _, perr := wal.ParseLSN(pos); err != nil || perr != nil {
			t.Fatalf("standby position = %q, %v, %v", pos, err, perr)
		}
		return nil
	}))
}
