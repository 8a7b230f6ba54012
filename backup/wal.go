package backup

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/pgwarden/pgwarden/postgres"
	"github.com/pgwarden/pgwarden/wal"
)

// segmentSize is the WAL segment size of clusters made by pgwarden
// (initdb's default).
const segmentSize = 16 << 20

// segmentsPerXLogID is how many segments one "log" of the name holds.
const segmentsPerXLogID = 0x100000000 / segmentSize

// Segment is one WAL segment file: timeline and segment number.
type Segment struct {
	Timeline uint32
	No       uint64
}

// parseSegment reads a 24-hex-digit segment name.
func parseSegment(name string) (Segment, bool) {
	if len(name) != 24 {
		return Segment{}, false
	}
	tl, err1 := strconv.ParseUint(name[:8], 16, 32)
	log, err2 := strconv.ParseUint(name[8:16], 16, 32)
	seg, err3 := strconv.ParseUint(name[16:], 16, 32)
	if err1 != nil || err2 != nil || err3 != nil || seg >= segmentsPerXLogID {
		return Segment{}, false
	}
	return Segment{Timeline: uint32(tl), No: log*segmentsPerXLogID + seg}, true
}

// String is the file name.
func (s Segment) String() string {
	return fmt.Sprintf("%08X%08X%08X", s.Timeline, s.No/segmentsPerXLogID, s.No%segmentsPerXLogID)
}

// End is the position just past the segment.
func (s Segment) End() wal.LSN { return wal.LSN((s.No + 1) * segmentSize) }

// segmentNo is the number of the segment holding lsn.
func segmentNo(lsn wal.LSN) uint64 { return uint64(lsn) / segmentSize }

// span is one timeline's stretch of a history: from Begin (where its
// parent switched to it) to End (where it switched to its child; 0 for the
// newest, which goes on).
type span struct {
	Timeline   uint32
	Begin, End wal.LSN
}

// History is the line of timelines leading to one timeline, oldest first,
// as its timeline history file (0000000N.history) records it.
type History []span

// parseHistory reads the history file of timeline tl: one line per
// ancestor, "parentTLI switchpoint reason", comments with #.
func parseHistory(tl uint32, text string) (History, error) {
	forks, err := postgres.ParseHistory(text)
	if err != nil {
		return nil, fmt.Errorf("history of timeline %d: %w", tl, err)
	}
	var h History
	var begin wal.LSN
	for _, f := range forks {
		if len(h) > 0 && (f.Timeline <= h[len(h)-1].Timeline || f.LSN < begin) {
			return nil, fmt.Errorf("history of timeline %d: timeline %d at %s: out of order", tl, f.Timeline, f.LSN)
		}
		h = append(h, span{Timeline: f.Timeline, Begin: begin, End: f.LSN})
		begin = f.LSN
	}
	if len(h) > 0 && h[len(h)-1].Timeline >= tl {
		return nil, fmt.Errorf("history of timeline %d names timeline %d as an ancestor", tl, h[len(h)-1].Timeline)
	}
	return append(h, span{Timeline: tl, Begin: begin}), nil
}

// Timelines are the history's timelines, oldest first.
func (h History) Timelines() []uint32 {
	out := make([]uint32, len(h))
	for i, s := range h {
		out[i] = s.Timeline
	}
	return out
}

// timelineOf is the timeline whose file PostgreSQL reads for segment no
// when it recovers along h: the newest one that began at or before the
// segment's end. The segment in which a timeline began is read from the
// new timeline's file, which holds the old one's records up to the switch.
func (h History) timelineOf(no uint64) uint32 {
	tl := h[0].Timeline
	for _, s := range h {
		if segmentNo(s.Begin) <= no {
			tl = s.Timeline
		}
	}
	return tl
}

// contains says whether tl is on h.
func (h History) contains(tl uint32) bool { return slices.Contains(h.Timelines(), tl) }

// Archive is the WAL archive of one archive id, as repo-ls lists it.
type Archive struct {
	ID string
	// Segments are the complete segments, with when each reached the
	// repository (its file's modification time).
	Segments map[Segment]time.Time
	// Partial are the ends of abandoned timelines (".partial"), kept by the
	// primary that left them; recovery does not read them.
	Partial map[Segment]bool
	// Histories are the timeline history files present.
	Histories map[uint32]time.Time
}

// archiveFile matches a path in the archive id's listing.
var archiveFile = regexp.MustCompile(`^(?:[0-9A-F]{16}/)?([0-9A-F]{24})(\.partial)?-[0-9a-f]{40}(?:\.[a-z0-9]+)?$|^([0-9A-F]{8})\.history$`)

// parseArchive reads `pgbackrest repo-ls --recurse --output=json` of an
// archive id.
func parseArchive(b []byte, id string) (Archive, error) {
	var ls map[string]struct {
		Type string `json:"type"`
		Time int64  `json:"time"`
	}
	if err := decodeJSON(b, &ls, "repo-ls"); err != nil {
		return Archive{}, err
	}
	a := Archive{ID: id, Segments: map[Segment]time.Time{}, Partial: map[Segment]bool{}, Histories: map[uint32]time.Time{}}
	for name, e := range ls {
		if e.Type != "file" {
			continue
		}
		m := archiveFile.FindStringSubmatch(name)
		switch {
		case m == nil:
		case m[3] != "":
			tl, _ := strconv.ParseUint(m[3], 16, 32)
			a.Histories[uint32(tl)] = time.Unix(e.Time, 0).UTC()
		default:
			s, ok := parseSegment(m[1])
			if !ok {
				continue
			}
			if m[2] != "" {
				a.Partial[s] = true
			} else {
				a.Segments[s] = time.Unix(e.Time, 0).UTC()
			}
		}
	}
	return a, nil
}

// newestTimeline is the highest timeline with a history file or a segment.
func (a Archive) newestTimeline() uint32 {
	var tl uint32 = 1
	for t := range a.Histories {
		tl = max(tl, t)
	}
	for s := range a.Segments {
		tl = max(tl, s.Timeline)
	}
	return tl
}

// Walk is the result of following the archive along a history.
type Walk struct {
	From Segment
	// Last is the last segment of the unbroken run from From (Reached
	// false: not even From is there).
	Last    Segment
	Reached bool
	// Newest is the newest archived segment along the history.
	Newest Segment
	// Missing is the first segment absent from the run (nil: none), and
	// MissingHistories the timelines of h without a history file.
	Missing          *Segment
	MissingHistories []uint32
	// Segments is how many were checked.
	Segments int
}

// ok says whether the run reaches the newest segment with nothing missing.
func (w Walk) ok() bool { return w.Missing == nil && len(w.MissingHistories) == 0 }

// WalkFrom follows the archive from the segment named from (a backup's WAL
// start) to the newest archived segment along h, segment by segment, as
// recovery would read them.
func (a Archive) WalkFrom(from string, h History) (Walk, error) {
	start, ok := parseSegment(from)
	if !ok {
		return Walk{}, fmt.Errorf("walk the archive: %q is not a WAL segment name", from)
	}
	if !h.contains(start.Timeline) {
		return Walk{}, fmt.Errorf("walk the archive: %s is on timeline %d, not on the history of timeline %d (%v)",
			from, start.Timeline, h[len(h)-1].Timeline, h.Timelines())
	}
	w := Walk{From: start, Newest: start}
	for s := range a.Segments {
		if s.No >= start.No && s.No > w.Newest.No && h.timelineOf(s.No) == s.Timeline {
			w.Newest = s
		}
	}
	for no := start.No; no <= w.Newest.No; no++ {
		s := Segment{Timeline: h.timelineOf(no), No: no}
		w.Segments++
		if _, ok := a.Segments[s]; !ok {
			w.Missing = &s
			break
		}
		w.Last, w.Reached = s, true
	}
	for _, sp := range h[1:] {
		if _, ok := a.Histories[sp.Timeline]; !ok {
			w.MissingHistories = append(w.MissingHistories, sp.Timeline)
		}
	}
	return w, nil
}
