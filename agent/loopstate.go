package agent

import (
	"bytes"
	"maps"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// loopState is what the loop carries from one step to the next: only the
// loop goroutine touches it, under Agent.mu. The effects of a step write
// none of it: they report what they did (an Outcome, a write's result), and
// Step folds that in through the pure functions below, one per point of the
// step: observed (the cluster read), advance (the action's outcome), and
// next on the two caches written after it (parameters, the member record).
type loopState struct {
	// dynamic is the cluster configuration last read from the DCS.
	dynamic config.Dynamic
	// dynParsed is the stored dynamic configuration last decoded.
	dynParsed parsedDynamic
	// lastDCS is when the loop last read the cluster (for /metrics).
	lastDCS time.Time
	// mem is what the loop remembers of past observations (memory.go).
	mem memory
	// last is the previous step's decision (its log line is not repeated).
	last Decision
	// fail is the action that last failed, backing off (backoff.go).
	fail failing
	// startFails counts failed starts of PostgreSQL in a row.
	startFails int
	// blindRelease is when the key was last released without a DCS view.
	blindRelease time.Time
	// replayWait is the replayed position last seen while the leader key
	// is held and promotion waits for replay (0: not waiting).
	replayWait wal.LSN
	// failovers counts the promotions this agent made (for /metrics).
	failovers uint64
	// slots: when each member was last seen, the plan last applied
	// (slots.go).
	slots slotState
	// sync: what commits wait for now, and since which leader position
	// each newly synchronous standby was seen so (sync.go).
	sync syncState
	// params are the cluster-wide parameters last written.
	params paramsWritten
	// member is the member record last written, and when (publish.go
	// writes it again only when it changed).
	member memberWrite
}

// effects is what an action changed that the loop carries into its next
// steps; each part is zero when the action did not do it.
type effects struct {
	// Member is the member record written before a long replica action.
	Member memberWrite
	// Slots: the replication slots made to match a plan (slots.go).
	Slots slotsRun
	// Sync: the synchronous-mode bookkeeping of a heartbeat or a
	// promotion (sync.go).
	Sync syncRun
	// Replay: a promotion looked at WAL replay; ReplayWait is the replayed
	// position it waits on (0: it does not wait).
	Replay     bool
	ReplayWait wal.LSN
	// Promoted: this member's server was promoted.
	Promoted bool
	// BlindRelease is when a release without a DCS view was tried.
	BlindRelease time.Time
}

// observed is st after the loop read cluster c from the DCS at now: when it
// did, whom it saw (for the slots of members gone for less than forget),
// and the dynamic configuration c holds, decoded once per stored value. A
// stored configuration that is not valid keeps the last good one and is
// returned as the error.
func (st loopState) observed(c *dcs.Cluster, now time.Time, forget time.Duration) (loopState, error) {
	st.lastDCS = now
	st.slots.seen = seeMembers(st.slots.seen, c, now, forget)
	if c.Config == nil {
		return st, nil
	}
	if !bytes.Equal(c.Config, st.dynParsed.raw) || st.dynParsed.raw == nil {
		dyn, err := config.ParseDynamic(c.Config)
		st.dynParsed = parsedDynamic{raw: bytes.Clone(c.Config), dyn: dyn, err: err}
	}
	if st.dynParsed.err != nil {
		return st, st.dynParsed.err
	}
	st.dynamic = st.dynParsed.dyn
	return st, nil
}

// parsedDynamic is a stored dynamic configuration and what decoding it gave.
type parsedDynamic struct {
	raw []byte
	dyn config.Dynamic
	err error
}

// advance is st after decision d ran with outcome out, the step ending at
// now (loopWait: the back-off's first delay); held says d is a wait for an
// action backing off, which leaves the back-off as it was. It returns what
// the back-off has to log.
func advance(st loopState, d Decision, held bool, out Outcome, now time.Time, loopWait time.Duration) (loopState, retryLog) {
	if !sameDecision(d, st.last) {
		st.last = d
	}
	what := logNothing
	if !held {
		st.fail, what = st.fail.record(d, out.Err, now, loopWait, st.dynamic.TTL.D())
	}
	st.startFails = startFailures(st.startFails, d, out.Err)
	did := out.Did
	if !did.BlindRelease.IsZero() {
		st.blindRelease = did.BlindRelease
	}
	if did.Replay {
		st.replayWait = did.ReplayWait
	}
	if did.Promoted {
		st.failovers++
	}
	st.slots = st.slots.next(did.Slots)
	st.sync = st.sync.next(did.Sync)
	st.member = st.member.next(did.Member)
	return st, what
}

// startFailures counts failed starts of PostgreSQL in a row (n so far): a
// replica action toward a source that failed adds one, one that succeeded
// ends the count.
func startFailures(n int, d Decision, err error) int {
	switch d.Action {
	case ActStartReplica, ActRewind, ActClone:
		if err != nil && d.Target != "" {
			return n + 1
		} else if err == nil {
			return 0
		}
	}
	return n
}

// memberWrite is a member record written to the DCS, and when (zero: none
// was written).
type memberWrite struct {
	at time.Time
	m  dcs.Member
}

// next is the record last written once w was (or not).
func (last memberWrite) next(w memberWrite) memberWrite {
	if w.at.IsZero() {
		return last
	}
	return w
}

// paramsWritten are cluster-wide parameters written to PostgreSQL (ok: they
// were).
type paramsWritten struct {
	ok     bool
	params map[string]string
}

// next is the parameters last written once w was (or not).
func (last paramsWritten) next(w paramsWritten) paramsWritten {
	if !w.ok {
		return last
	}
	return paramsWritten{ok: true, params: maps.Clone(w.params)}
}
