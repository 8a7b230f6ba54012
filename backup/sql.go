package backup

// The statements that are backup's own: a drill reads every row of every
// user table of the restored copy. The catalog reads backup shares with the
// agent and the CLI (in recovery, the databases, the position) are
// postgres's (postgres/sql.go); no other file of backup holds SQL.

// sqlSeqScanOnly makes every read a sequential scan, so a page that cannot
// be read fails the drill instead of being skipped by an index.
const sqlSeqScanOnly = "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off"

// sqlUserTables are the tables and materialized views a drill reads, as
// quoted names.
const sqlUserTables = `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
		ORDER BY 1`

// sqlReadTable reads every row of table (a quoted name from sqlUserTables):
// length(x::text) detoasts every value, so TOAST is read too.
func sqlReadTable(table string) string {
	return "SELECT count(*), coalesce(sum(length(x::text)), 0) FROM ONLY " + table + " x"
}
