package wal

// Fork is one line of a timeline history file: Timeline ended at LSN,
// where its child timeline began.
type Fork struct {
	Timeline uint32 `json:"timeline"`
	LSN      LSN    `json:"lsn"`
}
