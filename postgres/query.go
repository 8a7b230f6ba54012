package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// QueryResult is an operator's query's answer as text, as psql shows it.
type QueryResult struct {
	Columns []string
	Rows    [][]string
	// Tag is the command tag (SELECT 2, CREATE TABLE).
	Tag string
}

// RunQuery runs one statement an operator typed (`pgwarden query`) on a
// new connection to dsn and returns every row as text (NULL as "").
// It is the operator's SQL, not the agent's: nothing here parses it.
func RunQuery(ctx context.Context, dsn, sql string) (QueryResult, error) {
	var res QueryResult
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return res, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	// The simple protocol returns every value as text, whatever its type.
	rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return res, err
	}
	defer rows.Close()
	for rows.Next() {
		if res.Columns == nil {
			res.Columns = columns(rows)
		}
		raw := rows.RawValues()
		row := make([]string, len(raw))
		for i, v := range raw {
			row[i] = string(v)
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return res, err
	}
	if res.Columns == nil {
		res.Columns = columns(rows)
	}
	res.Tag = rows.CommandTag().String()
	return res, nil
}

func columns(rows pgx.Rows) []string {
	var cols []string
	for _, f := range rows.FieldDescriptions() {
		cols = append(cols, f.Name)
	}
	return cols
}
