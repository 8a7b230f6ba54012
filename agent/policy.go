package agent

import (
	"errors"

	"github.com/pgwarden/pgwarden/dcs"
)

// The executor's small decisions, pure, beside Decide: what an action does
// when a step of it answers one way or another.

// leaderKeyLost says whether err, from renewing the leader key, means the
// key is gone (another member holds it, or the lease it was bound to
// expired): a server this member made writable must stop at once, not at
// the next loop. Any other error (etcd slow, unreachable) leaves the key
// to the lease and the watchdog.
func leaderKeyLost(err error) bool {
	return errors.Is(err, dcs.ErrNotLeader) || errors.Is(err, dcs.ErrLeaseExpired)
}

// replayWaitStep says whether a promotion waits for WAL replay this loop:
// while the replayed position is behind the received one and moved since
// the last loop (lastSeen, 0 when not waiting). Waiting in the loop, with
// the lease renewed, rather than inside the promotion: a long replay there
// would outlast the lease. A replay that stopped moving does not hold the
// promotion back. It returns the position to remember (0: not waiting).
func replayWaitStep(pg PGState, lastSeen uint64) (wait bool, seen uint64) {
	if pg.Replayed < pg.WAL && pg.Replayed != lastSeen {
		return true, pg.Replayed
	}
	return false, 0
}

// reclonesAfterRewind says whether a failed pg_rewind (err) is a reason to
// wipe and re-clone: only when the data directory cannot be rewound. A
// source that did not answer says nothing of this data: it is kept, and
// the rewind tried again later.
func reclonesAfterRewind(err error) bool { return errors.Is(err, ErrCannotRewind) }
