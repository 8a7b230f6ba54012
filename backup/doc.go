// Package backup owns WAL archiving, base backups, logical dumps, retention
// and point-in-time restore into a backup repository. It follows whichever
// node is primary but makes no HA decisions.
package backup
