// Package hooks runs the operator's event command (hooks.event_command)
// after HA events, asynchronously and with a timeout, so a slow or hanging
// notifier never blocks the HA loop.
//
// The command is split into arguments like a shell would split it (single
// and double quotes group words) but is not run by a shell: placeholders are
// replaced inside each argument, so event details can never inject commands.
// Placeholders: %n node, %e event, %s success (1/0), %t RFC 3339 timestamp,
// %d details, %% a percent sign.
package hooks

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Runner fires the event command.
type Runner struct {
	node string
	log  hclog.Logger
	now  func() time.Time
	wg   sync.WaitGroup

	mu  sync.Mutex
	cmd command
}

// command is what Set replaces at once.
type command struct {
	argv    []string
	events  []string
	timeout time.Duration
}

// New parses command ("": run nothing, until Set gives one); events
// filters which events run it (empty: all).
func New(cmdline string, events []string, node string, timeout time.Duration, log hclog.Logger) (*Runner, error) {
	r := &Runner{node: node, log: log, now: time.Now}
	if err := r.Set(cmdline, events, timeout); err != nil {
		return nil, err
	}
	return r, nil
}

// Set replaces the command, its events and its timeout for the events
// fired from now on (SIGHUP); a bad command changes nothing.
func (r *Runner) Set(cmdline string, events []string, timeout time.Duration) error {
	argv, err := Split(cmdline)
	if err != nil {
		return fmt.Errorf("hooks.event_command: %w", err)
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmd = command{argv: argv, events: slices.Clone(events), timeout: timeout}
	return nil
}

// Fire runs the command for event in the background, if event is wanted.
func (r *Runner) Fire(event string, success bool, details string) {
	r.mu.Lock()
	c := r.cmd
	r.mu.Unlock()
	if len(c.argv) == 0 || len(c.events) > 0 && !slices.Contains(c.events, event) {
		return
	}
	argv := c.expand(r.node, r.now(), event, success, details)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			r.log.Warn("event command failed", "event", event, "error", err, "output", strings.TrimSpace(string(out)))
			return
		}
		r.log.Debug("event command ran", "event", event, "output", strings.TrimSpace(string(out)))
	}()
}

// Wait waits for the commands already fired (at shutdown, and in tests).
func (r *Runner) Wait() { r.wg.Wait() }

// Expand returns the argument vector for one event.
func (r *Runner) Expand(event string, success bool, details string) []string {
	r.mu.Lock()
	c := r.cmd
	r.mu.Unlock()
	return c.expand(r.node, r.now(), event, success, details)
}

func (c command) expand(node string, now time.Time, event string, success bool, details string) []string {
	ok := "0"
	if success {
		ok = "1"
	}
	repl := map[byte]string{'n': node, 'e': event, 's': ok, 't': now.UTC().Format(time.RFC3339), 'd': details, '%': "%"}
	out := make([]string, len(c.argv))
	for i, a := range c.argv {
		var b strings.Builder
		for j := 0; j < len(a); j++ {
			if a[j] == '%' && j+1 < len(a) {
				if v, ok := repl[a[j+1]]; ok {
					b.WriteString(v)
					j++
					continue
				}
			}
			b.WriteByte(a[j])
		}
		out[i] = b.String()
	}
	return out
}

// Split breaks a command line into words: blanks separate words, single
// quotes keep everything literal, double quotes group words and honour
// backslash escapes of " and \.
func Split(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("%q: unterminated single quote", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("%q: unterminated double quote", s)
			}
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
