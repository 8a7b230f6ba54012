package backup

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/internal/atomicfile"
)

// PgBackRest runs pgBackRest commands for one node: its own configuration
// file, each command cancellable through its context (SIGTERM, so that
// pgBackRest releases its locks, then SIGKILL), output streamed to the log.
type PgBackRest struct {
	o   Options
	log hclog.Logger
}

// New makes the runner; nothing is written until WriteConfig.
func New(o Options, log hclog.Logger) *PgBackRest {
	return &PgBackRest{o: o, log: log}
}

// Options are the runner's settings.
func (p *PgBackRest) Options() Options { return p.o }

// WriteConfig writes the configuration file (mode 0600: it may hold an S3
// secret) and creates the log, lock and spool directories.
func (p *PgBackRest) WriteConfig() error {
	text, err := render(p.o)
	if err != nil {
		return err
	}
	for _, d := range []string{p.o.Dir, p.o.logPath(), p.o.lockPath(), p.o.spoolPath()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("pgbackrest directories: %w", err)
		}
	}
	if err := atomicfile.Write(p.o.configPath(), []byte(text), 0o600); err != nil {
		return fmt.Errorf("write pgbackrest configuration: %w", err)
	}
	return nil
}

// commandError is a pgBackRest command that failed: its exit code (pgBackRest's
// error code, e.g. 45 for a WAL segment that exists with other content) and
// its last lines.
type commandError struct {
	Command string
	Code    int
	Output  string
	Err     error
}

func (e *commandError) Error() string {
	msg := e.Output
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("pgbackrest %s: exit %d: %s", e.Command, e.Code, msg)
}

func (e *commandError) Unwrap() error { return e.Err }

// run runs one command for stanza (the node's own when ""), with extra
// options before the command and its parameters (paths) after it; line,
// when set, gets every output line as it comes.
func (p *PgBackRest) run(ctx context.Context, stanza, command string, opts []string, line func(string), params ...string) (string, error) {
	if stanza == "" {
		stanza = p.o.Stanza
	}
	args := append([]string{"--config=" + p.o.configPath(), "--stanza=" + stanza}, opts...)
	args = append(append(args, command), params...)
	cmd := exec.CommandContext(ctx, p.o.binary(), args...)
	// SIGTERM first: pgBackRest then stops its workers and frees its lock.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	// If this agent dies, its backup dies with it rather than running on
	// unseen while a new leader starts another.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if p.o.PgPassword != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+p.o.PgPassword)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var out strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			l := sc.Text()
			out.WriteString(l + "\n")
			if line != nil {
				line(l)
			}
			if strings.Contains(l, "ERROR:") || strings.Contains(l, "WARN:") {
				p.log.Warn("pgbackrest "+command, "output", l)
			} else {
				p.log.Trace("pgbackrest "+command, "output", l)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return out.String(), &commandError{Command: command, Code: code, Output: errorLines(out.String()), Err: err}
	}
	return out.String(), nil
}

// errorLines is what a failed command said: its ERROR lines, else its
// last lines.
func errorLines(out string) string {
	var errs []string
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if strings.Contains(l, "ERROR:") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) == 0 {
		errs = lines[max(0, len(lines)-3):]
	}
	return strings.Join(errs, " | ")
}

// StanzaCreate creates the stanza (idempotent); it must run on the primary.
func (p *PgBackRest) StanzaCreate(ctx context.Context) error {
	_, err := p.run(ctx, "", "stanza-create", nil, nil)
	return err
}

// Check checks that archiving works end to end: it switches WAL and waits
// (up to archive-timeout) for the segment to reach the repository.
func (p *PgBackRest) Check(ctx context.Context) error {
	_, err := p.run(ctx, "", "check", nil, nil)
	return err
}

// Progress is how far a backup or restore has got.
type Progress struct {
	// Percent is pgBackRest's own count of the bytes done.
	Percent float64 `json:"percent"`
	// Bytes is the sum of the sizes of the files done so far, as
	// pgBackRest reports them (rounded to its units: KB, MB, GB).
	Bytes int64 `json:"bytes"`
}

// fileProgress matches pgBackRest's detail line for each file it copies:
// "backup file /path (8KB, 0.49%) checksum ...", "restore file ...".
var fileProgress = regexp.MustCompile(`(?:backup|restore) file .*\((\d+(?:\.\d+)?)(B|KB|MB|GB|TB), (\d+(?:\.\d+)?)%\)`)

// parseProgress reads one output line into p; it reports whether the line
// was a file line.
func parseProgress(line string, p *Progress) bool {
	m := fileProgress.FindStringSubmatch(line)
	if m == nil {
		return false
	}
	size, _ := strconv.ParseFloat(m[1], 64)
	unit := map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[m[2]]
	pct, _ := strconv.ParseFloat(m[3], 64)
	p.Bytes += int64(size * unit)
	p.Percent = pct
	return true
}

// newLabel matches "new backup label = 20261201-092709F".
var newLabel = regexp.MustCompile(`new backup label = (\S+)`)

// Backup takes a base backup of kind full, diff or incr on the primary.
// progress is called as files are copied. It returns the new backup's label.
func (p *PgBackRest) Backup(ctx context.Context, kind string, progress func(Progress)) (string, error) {
	var pr Progress
	label := ""
	_, err := p.run(ctx, "", "backup", []string{"--type=" + kind, "--log-level-console=detail"}, func(l string) {
		if parseProgress(l, &pr) && progress != nil {
			progress(pr)
		}
		if m := newLabel.FindStringSubmatch(l); m != nil {
			label = m[1]
		}
	})
	return label, err
}

// info reads the repository's view of a stanza (this node's when "").
func (p *PgBackRest) info(ctx context.Context, stanza string) (Info, error) {
	out, err := p.run(ctx, stanza, "info", []string{"--output=json", "--log-level-console=error"}, nil)
	if err != nil {
		return Info{}, err
	}
	return parseInfo([]byte(jsonPart(out)), orDefault(stanza, p.o.Stanza))
}

// jsonPart drops anything pgBackRest printed before its JSON document.
func jsonPart(out string) string {
	if i := strings.IndexAny(out, "[{"); i > 0 {
		return out[i:]
	}
	return out
}

// archiveFiles lists the WAL archive of one archive id of a stanza.
func (p *PgBackRest) archiveFiles(ctx context.Context, stanza, archiveID string) (Archive, error) {
	stanza = orDefault(stanza, p.o.Stanza)
	out, err := p.run(ctx, stanza, "repo-ls", []string{"--output=json", "--recurse", "--log-level-console=error"}, nil,
		"archive/"+stanza+"/"+archiveID)
	if err != nil {
		return Archive{}, err
	}
	return parseArchive([]byte(jsonPart(out)), archiveID)
}

// repoGet reads one file of the repository (path relative to its root).
func (p *PgBackRest) repoGet(ctx context.Context, stanza, path string) ([]byte, error) {
	var b strings.Builder
	_, err := p.run(ctx, stanza, "repo-get", []string{"--log-level-console=error"}, func(l string) { b.WriteString(l + "\n") }, path)
	return []byte(b.String()), err
}

// errNotInArchive: archive-get found no such file.
var errNotInArchive = errors.New("not in the archive")

// archiveGet copies one archived file (a segment or a history file) to dst.
func (p *PgBackRest) archiveGet(ctx context.Context, name, dst string) error {
	_, err := p.run(ctx, "", "archive-get", []string{"--log-level-console=error"}, nil, name, dst)
	var ce *commandError
	if errors.As(err, &ce) && ce.Code == 1 {
		return fmt.Errorf("%s: %w", name, errNotInArchive)
	}
	return err
}

// Verify runs pgBackRest's verify: checksums of every backup file and WAL
// segment. pgBackRest 2.45 exits 0 even when it finds errors; its report
// says "status: error" then, which becomes the error here.
func (p *PgBackRest) Verify(ctx context.Context) (string, error) {
	out, err := p.run(ctx, "", "verify", []string{"--output=text"}, nil)
	if err != nil {
		return out, err
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "status: "); ok && v != "ok" {
			return out, fmt.Errorf("pgbackrest verify: status %s", v)
		}
	}
	return out, nil
}

// RestoreRequest says what to restore where.
type RestoreRequest struct {
	// Stanza to restore from ("" = this node's).
	Stanza string
	// DataDir is the (empty) directory to restore into.
	DataDir string
	// Set is the backup label to restore ("" = pgBackRest's choice).
	Set string
	// Type is pgBackRest's --type: default (all WAL), time, lsn, standby.
	Type   string
	Target string
	// TargetAction: pause, promote or shutdown (time and lsn only).
	TargetAction string
}

// Restore restores a backup into an empty directory and writes the
// recovery settings (restore_command and the target) for PostgreSQL.
func (p *PgBackRest) Restore(ctx context.Context, r RestoreRequest, progress func(Progress)) error {
	opts := []string{"--pg1-path=" + r.DataDir, "--log-level-console=detail", "--type=" + orDefault(r.Type, "default")}
	if r.Set != "" {
		opts = append(opts, "--set="+r.Set)
	}
	if r.Target != "" {
		opts = append(opts, "--target="+r.Target)
	}
	if r.Type == "time" || r.Type == "lsn" {
		opts = append(opts, "--target-action="+orDefault(r.TargetAction, "pause"), "--target-timeline=latest")
	}
	var pr Progress
	_, err := p.run(ctx, r.Stanza, "restore", opts, func(l string) {
		if parseProgress(l, &pr) && progress != nil {
			progress(pr)
		}
	})
	return err
}

// decodeJSON is json.Unmarshal with the document named in the error.
func decodeJSON(b []byte, v any, what string) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse pgbackrest %s: %w", what, err)
	}
	return nil
}
