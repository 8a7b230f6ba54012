package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Repository is one stanza's backups and WAL archive, read at one time.
type Repository struct {
	Info    Info
	Archive Archive
	// History is the line of timelines of the newest timeline in the
	// archive: the one recovery follows (recovery_target_timeline=latest).
	History History
	ReadAt  time.Time
}

// ReadRepository reads a stanza's info, its archive listing and the
// newest timeline's history.
func (p *PgBackRest) ReadRepository(ctx context.Context, stanza string) (Repository, error) {
	stanza = orDefault(stanza, p.o.Stanza)
	in, err := p.info(ctx, stanza)
	if err != nil {
		return Repository{}, err
	}
	r := Repository{Info: in, ReadAt: time.Now()}
	id := in.archiveID()
	if id == "" {
		r.History = History{{Timeline: 1}}
		return r, nil
	}
	if r.Archive, err = p.archiveFiles(ctx, stanza, id); err != nil {
		return r, err
	}
	tl := r.Archive.newestTimeline()
	r.History = History{{Timeline: 1}}
	if tl > 1 {
		if _, ok := r.Archive.Histories[tl]; ok {
			b, err := p.repoGet(ctx, stanza, fmt.Sprintf("archive/%s/%s/%08X.history", stanza, id, tl))
			if err != nil {
				return r, fmt.Errorf("read the history of timeline %d: %w", tl, err)
			}
			if r.History, err = parseHistory(tl, string(b)); err != nil {
				return r, err
			}
		} else {
			// Segments of a timeline whose history file is missing: the
			// walk reports it.
			r.History = History{{Timeline: tl}}
		}
	}
	return r, nil
}

// Point is how far recovery from a backup can go: to the end of the newest
// segment of an unbroken run of archived WAL from the backup's start, along
// the newest timeline. The position is exact. The time is when that
// segment reached the repository: every commit before its end is in it,
// and none after it can be replayed; PostgreSQL closes a segment when it
// is full, at pg_switch_wal() or after archive_timeout, so the newest
// commits can be that much older than the segment.
type Point struct {
	LSN        string    `json:"lsn"`
	Timeline   uint32    `json:"timeline"`
	Segment    string    `json:"segment"`
	ArchivedAt time.Time `json:"archived_at"`
	// Missing is the first segment the run lacks, when the run stops before
	// the newest archived segment (a gap in the archive).
	Missing string `json:"missing,omitempty"`
}

// restorableTo is the point recovery from b can reach.
func (r Repository) restorableTo(b BackupSet) (Point, error) {
	w, err := r.Archive.WalkFrom(b.WALStart, r.History)
	if err != nil {
		return Point{}, err
	}
	if !w.Reached || w.Last.No < segmentNo(b.LSNStop) {
		miss := b.WALStart
		if w.Missing != nil {
			miss = w.Missing.String()
		}
		return Point{Missing: miss}, fmt.Errorf("backup %s cannot become consistent: WAL segment %s is not in the archive", b.Label, miss)
	}
	p := Point{LSN: w.Last.End().String(), Timeline: w.Last.Timeline, Segment: w.Last.String(), ArchivedAt: r.Archive.Segments[w.Last]}
	if w.Missing != nil {
		p.Missing = w.Missing.String()
	}
	return p, nil
}

// errHistoryConflict: a timeline history file is in the repository with
// other content: two primaries were promoted to the same timeline.
var errHistoryConflict = errors.New("a different history file of this timeline is in the repository")

// pushHistory archives a timeline history file unless the repository
// already has it. pgBackRest 2.45 checks WAL segments against what is
// archived but overwrites a history file: a diverged primary promoted to a
// timeline that the cluster's primary already took would replace the
// cluster's history and break every restore across it. Identical content
// is success (a retry, or a standby archiving what it received).
func (p *PgBackRest) pushHistory(ctx context.Context, path string) error {
	name := filepath.Base(path)
	mine, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("archive %s: %w", name, err)
	}
	tmp, err := os.CreateTemp("", "pgwarden-history-")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	os.Remove(tmp.Name()) // archive-get refuses to overwrite
	err = p.archiveGet(ctx, name, tmp.Name())
	switch {
	case errors.Is(err, errNotInArchive):
		_, err = p.run(ctx, "", "archive-push", nil, nil, path)
		return err
	case err != nil:
		return fmt.Errorf("archive %s: read the repository's copy: %w", name, err)
	}
	theirs, err := os.ReadFile(tmp.Name())
	if err != nil {
		return err
	}
	if !bytes.Equal(mine, theirs) {
		err := fmt.Errorf("%s: %w (two primaries promoted to that timeline: split brain?); refusing to overwrite it", name, errHistoryConflict)
		p.logFailure(err)
		return err
	}
	return nil
}

// PushWAL is archive_command: pgBackRest's archive-push of one WAL file, a
// history file checked first (pushHistory). pgBackRest 2.45 writes no log
// file for archive-push, so each failure is also written, with pgBackRest's
// own words, to archiveLog in this node's log path, where the agent finds
// the reason it reports.
func (p *PgBackRest) PushWAL(ctx context.Context, path string) error {
	if strings.HasSuffix(path, ".history") {
		return p.pushHistory(ctx, path)
	}
	_, err := p.run(ctx, "", "archive-push", nil, nil, path)
	if err != nil {
		p.logFailure(fmt.Errorf("%s: %w", filepath.Base(path), err))
	}
	return err
}

// archiveLog is the file, in this node's log path, where failed archive
// pushes are written.
const archiveLog = "pgwarden-archive-push.log"

func (p *PgBackRest) logFailure(err error) {
	f, ferr := os.OpenFile(filepath.Join(p.o.logPath(), archiveLog), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if ferr != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s ERROR: %v\n", time.Now().Format("2006-01-02 15:04:05.000"), err)
}

// PushMissing archives the complete segments of earlier timelines in this
// node's pg_wal that the repository lacks. A primary archives its segments
// shortly after closing them; one that dies in between leaves a gap, which
// the replica promoted in its place can fill: it received those segments,
// but as a standby (archive_mode on) it does not archive them. Called on
// taking over, before any new backup relies on the archive.
func (p *PgBackRest) PushMissing(ctx context.Context) ([]string, error) {
	walDir := filepath.Join(p.o.PgPath, "pg_wal")
	entries, err := os.ReadDir(walDir)
	if err != nil {
		return nil, err
	}
	var local []Segment
	var current uint32
	for _, e := range entries {
		s, ok := parseSegment(e.Name())
		if !ok {
			continue
		}
		current = max(current, s.Timeline)
		if info, err := e.Info(); err == nil && info.Size() == segmentSize {
			local = append(local, s)
		}
	}
	// Only segments on this node's own line of timelines: a rewound former
	// primary may still hold segments of a branch it left.
	h := History{{Timeline: current}}
	if current > 1 {
		b, err := os.ReadFile(filepath.Join(walDir, fmt.Sprintf("%08X.history", current)))
		if err != nil {
			return nil, err
		}
		if h, err = parseHistory(current, string(b)); err != nil {
			return nil, err
		}
	}
	in, err := p.info(ctx, "")
	if err != nil {
		return nil, err
	}
	id := in.archiveID()
	if id == "" {
		return nil, nil
	}
	a, err := p.archiveFiles(ctx, "", id)
	if err != nil {
		return nil, err
	}
	var pushed []string
	for _, s := range local {
		// The current timeline's segments are the archiver's own.
		if _, ok := a.Segments[s]; ok || s.Timeline >= current || h.timelineOf(s.No) != s.Timeline {
			continue
		}
		if _, err := p.run(ctx, "", "archive-push", nil, nil, filepath.Join(walDir, s.String())); err != nil {
			return pushed, err
		}
		pushed = append(pushed, s.String())
	}
	return pushed, nil
}
