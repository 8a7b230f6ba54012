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
	"errors"
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
	argv    []string
	events  []string
	node    string
	timeout time.Duration
	log     hclog.Logger
	now     func() time.Time
	wg      sync.WaitGroup
}

// New parses command; events filters which events run it (empty: all).
func New(command string, events []string, node string, timeout time.Duration, log hclog.Logger) (*Runner, error) {
	argv, err := Split(command)
	if err != nil {
		return nil, fmt.Errorf("hooks.event_command: %w", err)
	}
	if len(argv) == 0 {
		return nil, errors.New("hooks.event_command: empty command")
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &Runner{argv: argv, events: events, node: node, timeout: timeout, log: log, now: time.Now}, nil
}

// Fire runs the command for event in the background, if event is wanted.
func (r *Runner) Fire(event string, success bool, details string) {
	if len(r.events) > 0 && !slices.Contains(r.events, event) {
		return
	}
	argv := r.Expand(event, success, details)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
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
	ok := "0"
	if success {
		ok = "1"
	}
	repl := map[byte]string{'n': r.node, 'e': event, 's': ok, 't': r.now().UTC().Format(time.RFC3339), 'd': details, '%': "%"}
	out := make([]string, len(r.argv))
	for i, a := range r.argv {
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
