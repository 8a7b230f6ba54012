package backup

import (
	"fmt"
	"time"

	"github.com/pgwarden/pgwarden/wal"
)

// Info is a stanza as `pgbackrest info --output=json` reports it.
type Info struct {
	Stanza string
	// Status is pgBackRest's: code 0 ok, 1 missing stanza path, 2 no valid
	// backups, 3 missing stanza data, ...
	StatusCode    int
	StatusMessage string
	// Backups are the complete backups, oldest first: pgBackRest records a
	// backup in its backup.info only once every file and its checksum are
	// in the repository, so a stopped or failed run is never among them.
	Backups  []BackupSet
	Archives []archiveRange
	DBs      []db
	// Running: a backup of this stanza holds its lock on this node.
	Running bool
}

// BackupSet is one complete backup.
type BackupSet struct {
	Label string `json:"label"`
	Type  string `json:"type"` // full, diff, incr
	// Prior is the backup a diff or incr builds on.
	Prior string    `json:"prior,omitempty"`
	Start time.Time `json:"start"`
	Stop  time.Time `json:"stop"`
	// Size is the database size; RepoSize what the backup takes in the
	// repository (compressed, and for diff/incr only the changed files).
	Size     int64   `json:"size"`
	RepoSize int64   `json:"repository_size"`
	WALStart string  `json:"wal_start"`
	WALStop  string  `json:"wal_stop"`
	LSNStart wal.LSN `json:"-"`
	LSNStop  wal.LSN `json:"-"`
	// DBID is the database (system) the backup belongs to in the stanza.
	DBID int `json:"-"`
}

// timeline is the timeline the backup started on.
func (b BackupSet) timeline() uint32 {
	s, ok := parseSegment(b.WALStart)
	if !ok {
		return 0
	}
	return s.Timeline
}

// duration is how long the backup took.
func (b BackupSet) duration() time.Duration { return b.Stop.Sub(b.Start) }

// archiveRange is one archive id (e.g. "15-1") and its oldest and newest
// segment, over all timelines.
type archiveRange struct {
	ID       string
	DBID     int
	Min, Max string
}

// db is one database system the stanza has held.
type db struct {
	ID       int
	SystemID uint64
	Version  string
}

// infoJSON is the part of pgBackRest 2.45's info document that is used.
type infoJSON struct {
	Name    string `json:"name"`
	Archive []struct {
		Database struct {
			ID int `json:"id"`
		} `json:"database"`
		ID  string `json:"id"`
		Max string `json:"max"`
		Min string `json:"min"`
	} `json:"archive"`
	Backup []struct {
		Archive struct {
			Start string `json:"start"`
			Stop  string `json:"stop"`
		} `json:"archive"`
		Database struct {
			ID int `json:"id"`
		} `json:"database"`
		Info struct {
			Repository struct {
				Delta int64 `json:"delta"`
				Size  int64 `json:"size"`
			} `json:"repository"`
			Size int64 `json:"size"`
		} `json:"info"`
		Label string `json:"label"`
		LSN   struct {
			Start string `json:"start"`
			Stop  string `json:"stop"`
		} `json:"lsn"`
		Prior     *string `json:"prior"`
		Timestamp struct {
			Start int64 `json:"start"`
			Stop  int64 `json:"stop"`
		} `json:"timestamp"`
		Type string `json:"type"`
	} `json:"backup"`
	DB []struct {
		ID       int    `json:"id"`
		SystemID uint64 `json:"system-id"`
		Version  string `json:"version"`
	} `json:"db"`
	Status struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Lock    struct {
			Backup struct {
				Held bool `json:"held"`
			} `json:"backup"`
		} `json:"lock"`
	} `json:"status"`
}

// parseInfo reads `pgbackrest info --output=json` and returns the named
// stanza.
func parseInfo(b []byte, stanza string) (Info, error) {
	var all []infoJSON
	if err := decodeJSON(b, &all, "info"); err != nil {
		return Info{}, err
	}
	for _, s := range all {
		if s.Name != stanza {
			continue
		}
		in := Info{Stanza: s.Name, StatusCode: s.Status.Code, StatusMessage: s.Status.Message, Running: s.Status.Lock.Backup.Held}
		for _, a := range s.Archive {
			in.Archives = append(in.Archives, archiveRange{ID: a.ID, DBID: a.Database.ID, Min: a.Min, Max: a.Max})
		}
		for _, d := range s.DB {
			in.DBs = append(in.DBs, db{ID: d.ID, SystemID: d.SystemID, Version: d.Version})
		}
		for _, j := range s.Backup {
			bs := BackupSet{Label: j.Label, Type: j.Type, Start: time.Unix(j.Timestamp.Start, 0).UTC(), Stop: time.Unix(j.Timestamp.Stop, 0).UTC(),
				Size: j.Info.Size, RepoSize: j.Info.Repository.Delta, WALStart: j.Archive.Start, WALStop: j.Archive.Stop, DBID: j.Database.ID}
			if j.Prior != nil {
				bs.Prior = *j.Prior
			}
			var err error
			if bs.LSNStart, err = wal.ParseLSN(j.LSN.Start); err != nil {
				return Info{}, fmt.Errorf("backup %s: %w", j.Label, err)
			}
			if bs.LSNStop, err = wal.ParseLSN(j.LSN.Stop); err != nil {
				return Info{}, fmt.Errorf("backup %s: %w", j.Label, err)
			}
			in.Backups = append(in.Backups, bs)
		}
		return in, nil
	}
	return Info{}, fmt.Errorf("pgbackrest info: no stanza %q in the repository", stanza)
}

// archiveID is the archive id of the database the newest backup (else the
// newest database) belongs to.
func (in Info) archiveID() string {
	db := 0
	if n := len(in.Backups); n > 0 {
		db = in.Backups[n-1].DBID
	} else if n := len(in.DBs); n > 0 {
		db = in.DBs[n-1].ID
	}
	for i := len(in.Archives) - 1; i >= 0; i-- {
		if in.Archives[i].DBID == db || db == 0 {
			return in.Archives[i].ID
		}
	}
	return ""
}

// Newest is the newest complete backup (false when there is none).
func (in Info) Newest() (BackupSet, bool) {
	if len(in.Backups) == 0 {
		return BackupSet{}, false
	}
	return in.Backups[len(in.Backups)-1], true
}
