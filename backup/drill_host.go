package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// Drills is what a Manager needs to drill on its own host (*Driller).
type Drills interface {
	Drill(ctx context.Context) (DrillResult, error)
}

// RemoteDriller asks another member's agent to run a drill on its host
// (rest.PeerClient), under the backup lock lockID that the caller holds.
// ran says whether the drill ran there: err is then its outcome;
// otherwise err says why it could not run there.
type RemoteDriller interface {
	RemoteDrill(ctx context.Context, peer dcs.Member, lockID string) (res DrillResult, ran bool, err error)
}

// Errors of a drill asked for by another member.
var (
	// ErrNotLocked: such a drill runs only while the backup lock is held
	// for it, so it never runs beside a backup or another drill.
	ErrNotLocked = errors.New("the backup lock is not held for this drill")
	// ErrDrilling: this member runs a drill already.
	ErrDrilling = errors.New("a restore drill is already running on this member")
)

// DrillFailed is the error of a drill that ran and failed (not one that
// could not start).
type DrillFailed struct{ Err error }

func (e DrillFailed) Error() string { return e.Err.Error() }
func (e DrillFailed) Unwrap() error { return e.Err }

// drill runs a drill on a healthy replica's host, the leader's own when
// none is healthy or none can run it: the drill restores and starts a
// copy of the cluster, which costs the replica's disk and CPU rather than
// the primary's. The leader keeps the backup lock the whole time; the
// replica's drill lives as long as the leader's request, so the lock and
// leadership going end it too.
func (m *Manager) drill(ctx context.Context, r *run) (DrillResult, error) {
	if m.c.Remote != nil {
		hosts, err := m.drillHosts(ctx)
		if err != nil {
			m.log.Warn("restore drill: cannot read the members: running it on this host", "error", err)
		}
		for _, peer := range hosts {
			m.setHost(r, peer.Name)
			m.log.Info("restore drill: running it on a replica", "peer", peer.Name, "id", r.lock.ID)
			res, ran, err := m.c.Remote.RemoteDrill(ctx, peer, r.lock.ID)
			if ran {
				res.Member = peer.Name
				if err != nil {
					err = fmt.Errorf("%w (ran on %s)", err, peer.Name)
				}
				return res, err
			}
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			m.log.Warn("restore drill cannot run on the replica: trying the next host", "peer", peer.Name, "error", err)
		}
	}
	m.setHost(r, m.c.Member)
	res, err := m.c.Driller.Drill(ctx)
	res.Member = m.c.Member
	if err != nil {
		err = fmt.Errorf("%w (ran on %s)", err, m.c.Member)
	}
	return res, err
}

// drillHosts are the members a drill may run on, best first: streaming
// replicas that run and take backups, least behind first (the order of
// sources), each with an API to ask. The leader's own host is the
// fallback, not listed.
func (m *Manager) drillHosts(ctx context.Context) ([]dcs.Member, error) {
	c, err := m.c.Lock.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	var out []dcs.Member
	for _, h := range healthyReplicas(c) {
		if h.APIURL != "" && h.Name != m.c.Member {
			out = append(out, h)
		}
	}
	return out, nil
}

func (m *Manager) setHost(r *run, host string) {
	m.mu.Lock()
	r.host = host
	m.mu.Unlock()
}

// DrillHere runs a drill on this member's host for the leader, which
// holds the backup lock lockID for it; it lasts as long as ctx (the
// leader's request). A drill that ran and failed is a DrillFailed.
func (m *Manager) DrillHere(ctx context.Context, lockID string) (DrillResult, error) {
	if m.c.Driller == nil {
		return DrillResult{}, fmt.Errorf("drills: %w", ErrNotConfigured)
	}
	if strings.TrimSpace(lockID) == "" {
		return DrillResult{}, fmt.Errorf("%w: no lock id given", ErrNotLocked)
	}
	c, err := m.freshCluster(ctx)
	if err != nil {
		return DrillResult{}, fmt.Errorf("drill: read the backup lock: %w", err)
	}
	l := c.BackupLock
	if l == nil || l.ID != lockID || l.Type != "drill" {
		held := "nothing"
		if l != nil {
			held = fmt.Sprintf("%s %s of %s", l.Type, l.ID, l.Member)
		}
		return DrillResult{}, fmt.Errorf("%w: %q asked for, the lock holds %s", ErrNotLocked, lockID, held)
	}
	if !m.drilling.CompareAndSwap(false, true) {
		return DrillResult{}, ErrDrilling
	}
	defer m.drilling.Store(false)
	m.log.Info("restore drill asked for by the leader", "peer", l.Member, "id", lockID)
	res, err := m.c.Driller.Drill(ctx)
	res.Member = m.c.Member
	if err != nil {
		m.log.Error("restore drill failed", "id", lockID, "error", err)
		return res, DrillFailed{Err: err}
	}
	m.log.Info("restore drill passed", "id", lockID, "took", res.Took.Round(100*time.Millisecond))
	return res, nil
}

// freshCluster reads the cluster as etcd has it now: the leader asks for
// a drill the moment it has taken the lock, sooner than this member's
// watch may deliver it.
func (m *Manager) freshCluster(ctx context.Context) (*dcs.Cluster, error) {
	return dcs.Fresh(ctx, m.c.Lock)
}
