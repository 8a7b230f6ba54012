package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/hooks"
	"github.com/pgwarden/pgwarden/rest"
)

// What SIGHUP does with each key of a re-read file. A pattern ending in
// ".*" is every key below it; a key that matches none cannot change while
// the agent runs.
var (
	// liveKeys are applied to the running agent.
	liveKeys = []string{
		"log.level", "priority", "tags.*",
		"rest.auth", "rest.auth.*",
		// rest.tls itself (on or off) is the listener's kind: not live.
		"rest.tls.cert", "rest.tls.key", "rest.tls.ca", "rest.tls.client_ca", "rest.tls.verify_client",
		"pooler.pgbouncer.databases.*",
		"hooks.*",
		"backup.schedule.*",
	}
	// initKeys are read only when the cluster is created: a change is
	// reported, and changes nothing.
	initKeys = []string{"cluster.*", "bootstrap.*"}
)

type reloadClass int

const (
	reloadRefused reloadClass = iota
	reloadLive
	reloadInit
)

// classify says what SIGHUP does with a changed key.
func classify(key string) reloadClass {
	match := func(patterns []string) bool {
		for _, p := range patterns {
			if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(key, prefix) || key == p {
				return true
			}
		}
		return false
	}
	switch {
	case match(liveKeys):
		return reloadLive
	case match(initKeys):
		return reloadInit
	}
	return reloadRefused
}

// reloader re-reads the node's file on SIGHUP and applies it to the running
// agent: all of it, or, when the file is invalid or a key that cannot change
// live changed, none of it.
type reloader struct {
	path string
	w    *wired
	// cfg is the running configuration; only the reloader's goroutine
	// uses it.
	cfg *config.Config
}

// reload is one SIGHUP.
func (r *reloader) reload(ctx context.Context) {
	log := r.w.log
	next, err := loadConfig(r.path)
	if err != nil {
		log.Error("SIGHUP: configuration not reloaded, the running one is kept", "error", err)
		return
	}
	changes := config.Diff(r.cfg, next)
	var refused []string
	for _, c := range changes {
		if classify(c.Key) == reloadRefused {
			refused = append(refused, c.Key)
		}
	}
	if len(refused) > 0 {
		log.Error("SIGHUP: configuration not reloaded, the running one is kept: a key changed that cannot change while the agent runs (restart the agent to apply it)",
			"key", strings.Join(refused, ", "))
		return
	}
	apply, err := r.w.prepare(next)
	if err != nil {
		log.Error("SIGHUP: configuration not reloaded, the running one is kept", "error", err)
		return
	}
	certs := apply(ctx, changes)
	for _, c := range changes {
		args := []any{"key", c.Key}
		if !c.Secret {
			args = append(args, "from", c.Old, "to", c.New)
		}
		if classify(c.Key) == reloadInit {
			log.Warn("SIGHUP: not applied: read only when the cluster is created (cluster settings change with edit-config)", args...)
			continue
		}
		log.Info("SIGHUP: applied", args...)
	}
	if certs != "" {
		log.Info("SIGHUP: rest.tls certificate reloaded", "serial", certs)
	}
	if len(changes) == 0 && certs == "" {
		log.Info("SIGHUP: configuration re-read: nothing changed")
	}
	// Last: a higher level must not hide the lines above.
	if next.Log.Level != r.cfg.Log.Level {
		log.SetLevel(hclog.LevelFromString(next.Log.Level))
	}
	r.cfg = next
}

// prepare makes everything next asks for that can fail (TLS files, the
// hook command, cron strings) before anything changes; apply then puts it
// in place, and returns the serial of the REST certificate when it is a
// new one (rotated on disk) and "" otherwise.
func (w *wired) prepare(next *config.Config) (apply func(ctx context.Context, changes []config.Change) (newSerial string), err error) {
	var srvTLS, peerTLS *tls.Config
	if next.REST.TLS != nil {
		if srvTLS, err = rest.ServerTLS(next.REST.TLS); err != nil {
			return nil, err
		}
		if peerTLS, err = rest.PeerTLS(next.REST.TLS); err != nil {
			return nil, err
		}
	}
	if _, err := hooks.Split(next.Hooks.EventCommand); err != nil {
		return nil, fmt.Errorf("hooks.event_command: %w", err)
	}
	var scheds map[string]backup.Cron
	if next.Backup != nil {
		if scheds, err = parseSchedules(next.Backup); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context, changes []config.Change) string {
		changed := func(prefix string) bool {
			for _, c := range changes {
				if c.Key == prefix || strings.HasPrefix(c.Key, prefix+".") {
					return true
				}
			}
			return false
		}
		if changed("priority") || changed("tags") {
			w.agent.SetLive(liveNode(next))
		}
		if changed("rest.auth") {
			w.server.SetAuth(next.REST.Auth)
			w.peers.SetAuth(next.REST.Auth)
		}
		serial := ""
		if srvTLS != nil {
			if old, now := w.server.Certificate(), srvTLS.Certificates[0].Leaf; old == nil || !bytes.Equal(old.Raw, now.Raw) {
				serial = now.SerialNumber.Text(16)
			}
			// Every SIGHUP: the files may have been rotated under
			// unchanged names.
			if err := w.server.SetTLS(srvTLS); err != nil {
				w.log.Error("SIGHUP: rest.tls not applied", "error", err)
			}
			w.peers.SetTLS(peerTLS)
			warnUnverifiable(w.log, peerTLS)
		}
		if changed("hooks") {
			// Split above: Set cannot fail.
			_ = w.hooks.Set(next.Hooks.EventCommand, next.Hooks.Events, next.Hooks.Timeout.D())
		}
		if changed("pooler.pgbouncer.databases") && w.pooler != nil {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := w.pooler.SetDatabases(pctx, next.Pooler.PgBouncer.Databases); err != nil {
				w.log.Warn("SIGHUP: pooler databases set, but pgbouncer not reloaded (retried at the next leader change)", "error", err)
			}
			cancel()
		}
		if changed("backup.schedule") && w.backup != nil {
			w.backup.SetSchedules(scheds)
		}
		return serial
	}, nil
}

// liveNode is the part of the agent's settings a SIGHUP may change.
func liveNode(cfg *config.Config) agent.Live {
	return agent.Live{
		Priority:      cfg.PriorityValue(),
		NoFailover:    cfg.Tags.NoFailover,
		ReplicateFrom: cfg.Tags.ReplicateFrom,
		Tags:          tagMap(cfg.Tags),
	}
}
