//go:build integration

package chaos

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// recorder keeps every write the clients sent, on one clock.
type recorder struct {
	start time.Time
	next  atomic.Int64
	mu    sync.Mutex
	ws    []Write
}

func (r *recorder) now() time.Duration { return time.Since(r.start) }

func (r *recorder) add(w Write) {
	r.mu.Lock()
	r.ws = append(r.ws, w)
	r.mu.Unlock()
}

func (r *recorder) writes() []Write {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Write(nil), r.ws...)
}

func (r *recorder) acked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, w := range r.ws {
		if w.Acked() {
			n++
		}
	}
	return n
}

// insertSQL reports who acknowledged the row: the server's port names the
// node, the timeline of the WAL it is writing names the epoch.
const insertSQL = `INSERT INTO chaos (id, src) VALUES ($1, $2)
RETURNING current_setting('port')::int, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int`

const busySQL = `INSERT INTO chaos (id, src) SELECT $1, $2 FROM (SELECT chaos_spin($3)) s
RETURNING current_setting('port')::int, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int`

// writer sends one numbered INSERT per tick over a new connection each
// time, until ctx ends. The send time is taken once connected, so a
// connection that waited for a starting server does not date its write
// before the server could take it.
func (c *cluster) writer(ctx context.Context, rec *recorder, src, dsn string, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c.writeOnce(ctx, rec, src, dsn, insertSQL, 5*time.Second, 0)
	}
}

func (c *cluster) writeOnce(ctx context.Context, rec *recorder, src, dsn, sql string, timeout time.Duration, spin int64) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(wctx, dsn)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	if spin > 0 {
		// The spinning backend yields to everything else on the host:
		// it is there to be fenced, not to starve the cluster.
		var pid int
		if conn.QueryRow(wctx, "SELECT pg_backend_pid()").Scan(&pid) != nil {
			return
		}
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, pid, 19)
	}
	id := rec.next.Add(1)
	w := Write{ID: id, Src: src, Send: rec.now()}
	var port, tl int64
	args := []any{id, src}
	if spin > 0 {
		args = append(args, spin)
	}
	err = conn.QueryRow(wctx, sql, args...).Scan(&port, &tl)
	if err == nil {
		w.Ack = rec.now()
		w.Node, w.Timeline = c.byPort(int(port)), uint32(tl)
	}
	rec.add(w)
}

// busy keeps one CPU-bound INSERT in flight on a node, a new one shortly
// after the last ended: idle backends die about a second after their
// postmaster, a busy one would commit long after, so only a busy backend
// shows a fence that misses backends.
func (c *cluster) busy(ctx context.Context, rec *recorder, n *node, spin int64) {
	for i := 0; ctx.Err() == nil; i++ {
		c.writeOnce(ctx, rec, "busy-"+n.name, n.dsn(), busySQL, 10*time.Minute, spin)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// workload starts the clients: a writer per node at its own PostgreSQL,
// a writer through PgBouncer, and a busy statement per node.
func (c *cluster) workload(ctx context.Context, rec *recorder, spin int64) *sync.WaitGroup {
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	for _, n := range c.nodes {
		n := n
		run(func() { c.writer(ctx, rec, n.name, n.dsn(), 50*time.Millisecond) })
		if spin > 0 {
			run(func() { c.busy(ctx, rec, n, spin) })
		}
	}
	bouncer := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=app connect_timeout=2 sslmode=disable", c.bouncerPort)
	run(func() { c.writer(ctx, rec, "pgbouncer", bouncer, 50*time.Millisecond) })
	return &wg
}

// finalRows reads the IDs on the primary.
func (c *cluster) finalRows(p *node) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.dsn())
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT id FROM chaos")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		m[id] = true
	}
	return m, rows.Err()
}
