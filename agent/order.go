package agent

import "github.com/pgwarden/pgwarden/wal"

// contender is a member competing to become leader.
type contender struct {
	Name     string
	Timeline uint32
	WAL      wal.LSN
	Priority int
}

// better reports whether a should be promoted rather than b. It is the one
// total order of candidates (all of them on the newest timeline's history,
// see timeline.go):
//
//  1. the later end of WAL wins: the higher timeline, then the higher
//     position (what it would have after promotion);
//  2. among equal ends, the higher priority wins;
//  3. among equal priorities, the lexically smaller name wins.
//
// Names are unique in a cluster, so two different members are never equal.
func better(a, b contender) bool {
	if a.Timeline != b.Timeline {
		return a.Timeline > b.Timeline
	}
	if a.WAL != b.WAL {
		return a.WAL > b.WAL
	}
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return a.Name < b.Name
}

// best returns the best of cs by better, and false when cs is empty.
func best(cs []contender) (contender, bool) {
	if len(cs) == 0 {
		return contender{}, false
	}
	best := cs[0]
	for _, c := range cs[1:] {
		if better(c, best) {
			best = c
		}
	}
	return best, true
}
