package agent

import (
	"fmt"
	"slices"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// A failover may only promote a member whose WAL is a prefix of the newest
// timeline's history: on the newest timeline itself, or on an ancestor of it
// and not past the point where that ancestor ended. A former primary that
// went on writing on timeline 1 after a replica was promoted to timeline 2
// has a higher raw LSN than the timeline-2 replica, but promoting it would
// lose every commit made on timeline 2.

// newestTimeline is the newest timeline any source names, with its history
// when some source knows it. The sources: this server, the member records
// (each carries its timeline's history, read from PostgreSQL), the peers'
// answers, and the DCS history (appended by each new leader after its
// promotion, so it can lag behind).
func newestTimeline(o Observation) (tli uint32, hist []dcs.Fork, known bool) {
	tli, hist, known = o.PG.Timeline, o.PG.History, true
	consider := func(t uint32, h []dcs.Fork, hasHist bool) {
		switch {
		case t > tli:
			tli, hist, known = t, h, hasHist
		case t == tli && !known && hasHist:
			hist, known = h, true
		}
	}
	if o.Cluster != nil {
		for _, m := range o.Cluster.Members {
			consider(m.Timeline, m.History, m.History != nil || m.Timeline <= 1)
		}
	}
	for _, p := range o.Peers {
		if p.Reachable {
			consider(p.Timeline, nil, p.Timeline <= 1)
		}
	}
	if o.Cluster != nil {
		for _, e := range o.Cluster.History {
			// A promotion announced but perhaps never done counts once
			// someone reports that timeline.
			if !e.Pending || reported(o, e.Timeline) {
				consider(e.Timeline, nil, false)
			}
		}
		if !known {
			if h, ok := historyFromDCS(o.Cluster.History, tli); ok {
				hist, known = h, true
			}
		}
	}
	return tli, hist, known
}

// reported: a member record or a peer says it is on timeline tli.
func reported(o Observation, tli uint32) bool {
	for _, m := range o.Cluster.Members {
		if m.Timeline == tli {
			return true
		}
	}
	for _, p := range o.Peers {
		if p.Reachable && p.Timeline == tli {
			return true
		}
	}
	return o.PG.Timeline == tli
}

// highestTimelineID is the highest timeline ID anyone has used or taken
// (pending promotions included): the next promotion must pick above it.
func highestTimelineID(o Observation) uint32 {
	t := o.PG.Timeline
	if o.Cluster != nil {
		for _, m := range o.Cluster.Members {
			t = max(t, m.Timeline)
		}
		for _, e := range o.Cluster.History {
			t = max(t, e.Timeline)
		}
	}
	for _, p := range o.Peers {
		t = max(t, p.Timeline)
	}
	return t
}

// historyFromDCS derives timeline tli's history from the DCS record of
// promotions: each entry says where its timeline began and which one it
// left (older entries without a parent left the timeline recorded before
// them: promotions are serialized by the leader key).
func historyFromDCS(entries []dcs.HistoryEntry, tli uint32) ([]dcs.Fork, bool) {
	es := slices.Clone(entries)
	slices.SortStableFunc(es, func(a, b dcs.HistoryEntry) int { return int(a.Timeline) - int(b.Timeline) })
	byTLI := map[uint32]dcs.HistoryEntry{}
	prev := uint32(1)
	for _, e := range es {
		if e.Parent == 0 {
			e.Parent = prev
		}
		if e.Parent < e.Timeline {
			byTLI[e.Timeline] = e
		}
		prev = e.Timeline
	}
	var rev []dcs.Fork
	for t := tli; t > 1; {
		e, ok := byTLI[t]
		if !ok {
			return nil, false
		}
		rev = append(rev, dcs.Fork{Timeline: e.Parent, LSN: e.LSN})
		t = e.Parent
	}
	slices.Reverse(rev)
	return rev, true
}

// onNewestHistory says whether WAL ending at (tli, pos) is a prefix of the
// newest timeline's history, and why not.
func onNewestHistory(tli uint32, pos wal.LSN, newest uint32, hist []dcs.Fork, known bool) (bool, string) {
	if tli >= newest {
		return true, ""
	}
	if !known {
		return false, fmt.Sprintf("on timeline %d, and the history of the newer timeline %d is not known", tli, newest)
	}
	for _, f := range hist {
		if f.Timeline == tli {
			if pos <= f.LSN {
				return true, ""
			}
			return false, fmt.Sprintf("diverged: on timeline %d at %d, past where timeline %d ended (%d) in the history of the newest timeline %d", tli, pos, tli, f.LSN, newest)
		}
	}
	return false, fmt.Sprintf("timeline %d is not an ancestor of the newest timeline %d", tli, newest)
}
