package agent

// Backup is the WAL archive and base backups of this node (nil when none is
// configured). The loop tells it after every iteration whether this node
// leads as a writable primary; it must not block: its work (stanza-create
// and check on taking over, a backup that must stop when leadership goes)
// runs on its own goroutines.
type Backup interface {
	SetLeading(leading bool)
}

// tellBackup reports leadership after an iteration, from the snapshot just
// published and PostgreSQL's state after the action.
func (a *Agent) tellBackup(pg PGState) {
	if a.d.Backup == nil {
		return
	}
	a.d.Backup.SetLeading(a.Status().IsLeader && pg.Writable())
}
