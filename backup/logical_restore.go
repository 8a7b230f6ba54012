package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/postgres"
)

// verifyDump checks every file of the dump in dir against its manifest
// (size and SHA-256) and has pg_restore --list read each database's
// archive: a dump that fails here would fail at a restore.
func verifyDump(ctx context.Context, binDir, dir string, log hclog.Logger) (Manifest, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return m, err
	}
	for _, f := range m.Files {
		p := filepath.Join(dir, f.Name)
		sum, n, err := sha256File(p)
		switch {
		case err != nil:
			return m, fmt.Errorf("dump %s: %w", m.Stamp, err)
		case n != f.Size || sum != f.SHA256:
			return m, fmt.Errorf("dump %s: %s does not match its manifest (%d bytes, sha256 %s; the manifest says %d bytes, %s)",
				m.Stamp, f.Name, n, sum, f.Size, f.SHA256)
		}
		if f.Globals {
			continue
		}
		if _, err := runTool(ctx, filepath.Join(binDir, "pg_restore"), []string{"--list", p}, nil, log); err != nil {
			return m, fmt.Errorf("dump %s: %s (database %s) does not read back: %w", m.Stamp, f.Name, f.Database, err)
		}
	}
	return m, nil
}

func sha256File(p string) (string, int64, error) {
	fh, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// RestoreDump restores the dump in dir into the server dsn points at:
// first the globals (roles that exist there already are left as they are),
// then each database, created when it does not exist there. The dump is
// checked against its manifest before anything is written.
func RestoreDump(ctx context.Context, binDir, dir, dsn string, log hclog.Logger) (Manifest, error) {
	m, err := verifyDump(ctx, binDir, dir, log)
	if err != nil {
		return m, err
	}
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return m, fmt.Errorf("--dsn: %w", err)
	}
	env := []string{"PGHOST=" + cc.Host, "PGPORT=" + strconv.Itoa(int(cc.Port)), "PGUSER=" + cc.User, "PGPASSWORD=" + cc.Password, "PGCONNECT_TIMEOUT=10"}
	if cc.TLSConfig == nil {
		env = append(env, "PGSSLMODE=disable")
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return m, fmt.Errorf("connect to the target server: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, f := range m.Files {
		if !f.Globals {
			continue
		}
		out, err := runTool(ctx, filepath.Join(binDir, "psql"), []string{"--no-psqlrc", "--quiet", "--dbname=postgres", "--file=" + filepath.Join(dir, f.Name)}, env, log)
		bad := globalsErrors(out)
		if err != nil && len(bad) == 0 {
			return m, fmt.Errorf("restore the globals of dump %s: %w", m.Stamp, err)
		}
		if len(bad) > 0 {
			return m, fmt.Errorf("restore the globals of dump %s: %s", m.Stamp, strings.Join(bad, " | "))
		}
	}
	for _, f := range m.Files {
		if f.Globals {
			continue
		}
		exists, err := postgres.DatabaseExists(ctx, conn, f.Database)
		if err != nil {
			return m, fmt.Errorf("restore database %s: %w", f.Database, err)
		}
		args := []string{"--exit-on-error", "--no-password", "--dbname=" + f.Database}
		if !exists {
			args = []string{"--exit-on-error", "--no-password", "--create", "--dbname=postgres"}
		}
		if _, err := runTool(ctx, filepath.Join(binDir, "pg_restore"), append(args, filepath.Join(dir, f.Name)), env, log); err != nil {
			return m, fmt.Errorf("restore database %s from dump %s: %w", f.Database, m.Stamp, err)
		}
		log.Info("database restored", "database", f.Database, "dump", m.Stamp)
	}
	return m, nil
}

// globalsErrors are psql's errors while replaying the globals, less the
// ones that say a role is there already (the target's own superuser, at
// least): its attributes and password are still set by the ALTER ROLE
// that follows each CREATE ROLE in pg_dumpall's output.
func globalsErrors(out string) []string {
	var bad []string
	for l := range strings.SplitSeq(out, "\n") {
		if strings.Contains(l, "ERROR:") && !strings.Contains(l, "already exists") {
			bad = append(bad, strings.TrimSpace(l))
		}
	}
	return bad
}
