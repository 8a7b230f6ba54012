package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ExpiryPlan is what retention keeps and removes, base backups and logical
// dumps alike, and from which backup on the archive keeps continuous WAL.
type ExpiryPlan struct {
	Policy  Policy     `json:"policy"`
	Backups []Decision `json:"backups"`
	Dumps   []Decision `json:"dumps"`
	// PITRFrom is the oldest backup that restores to any point in time:
	// WAL is kept continuous from it on; older kept backups restore to
	// their end only (their WAL up to consistency stays).
	PITRFrom string `json:"pitr_from,omitempty"`
	// ArchiveKeep is how many kept backups, newest first, keep continuous
	// WAL (pgBackRest's repo1-retention-archive, type incr); 0: all.
	ArchiveKeep int `json:"archive_keep"`
}

// PlanExpiry applies the policy to a repository's backups and to dumps.
func PlanExpiry(repo Repository, dumps []Manifest, p Policy, loc *time.Location) ExpiryPlan {
	var items []Item
	for _, b := range repo.Info.Backups {
		items = append(items, Item{ID: b.Label, Time: b.Stop, Prior: b.Prior})
	}
	var ditems []Item
	for _, d := range dumps {
		ditems = append(ditems, Item{ID: d.Stamp, Time: d.Started})
	}
	plan := ExpiryPlan{Policy: p, Backups: retain(items, p, loc), Dumps: retain(ditems, p, loc)}
	if from, ok := pitrFrom(plan.Backups); ok && !p.KeepsAll() {
		plan.PITRFrom = from.ID
		for _, d := range plan.Backups {
			if d.Keep() && !d.Time.Before(from.Time) {
				plan.ArchiveKeep++
			}
		}
	}
	return plan
}

// Removed are the decisions to remove.
func removed(ds []Decision) []Decision {
	var out []Decision
	for _, d := range ds {
		if !d.Keep() {
			out = append(out, d)
		}
	}
	return out
}

// Expirer is what applying a plan needs of pgBackRest (*PgBackRest).
type Expirer interface {
	ExpireSet(ctx context.Context, label string) error
	ExpireArchive(ctx context.Context, keep int) error
}

// ApplyExpiry removes what the plan removes: base backups through
// pgBackRest (each chain from its root: expiring a full takes the diffs and
// incrs built on it, which the plan removes too, since a kept one keeps its
// full), then WAL older than continuous recovery needs, then dumps (renamed
// out of sight first, so a half-removed dump never looks complete).
func ApplyExpiry(ctx context.Context, e Expirer, plan ExpiryPlan, dumpsRoot string, log hclog.Logger) error {
	if plan.Policy.KeepsAll() {
		return nil
	}
	gone := map[string]bool{}
	for _, d := range removed(plan.Backups) {
		gone[d.ID] = true
	}
	for _, d := range removed(plan.Backups) {
		if d.Prior != "" && gone[d.Prior] {
			continue // goes with its prior
		}
		if err := e.ExpireSet(ctx, d.ID); err != nil {
			return fmt.Errorf("expire backup %s: %w", d.ID, err)
		}
		log.Info("backup expired by retention", "label", d.ID, "ended", d.Time.UTC().Format(time.RFC3339))
	}
	if plan.ArchiveKeep > 0 {
		if err := e.ExpireArchive(ctx, plan.ArchiveKeep); err != nil {
			return fmt.Errorf("expire WAL older than backup %s: %w", plan.PITRFrom, err)
		}
	}
	for _, d := range removed(plan.Dumps) {
		dir := filepath.Join(dumpsRoot, d.ID)
		trash := filepath.Join(dumpsRoot, ".removing-"+d.ID)
		if err := os.Rename(dir, trash); err != nil {
			return fmt.Errorf("expire logical dump %s: %w", d.ID, err)
		}
		if err := os.RemoveAll(trash); err != nil {
			return fmt.Errorf("expire logical dump %s: %w", d.ID, err)
		}
		log.Info("logical dump expired by retention", "stamp", d.ID)
	}
	return nil
}

// ExpireSet removes one backup (and those built on it) from the repository.
func (p *PgBackRest) ExpireSet(ctx context.Context, label string) error {
	_, err := p.run(ctx, "", "expire", []string{"--set=" + label}, nil)
	return err
}

// ExpireArchive removes WAL that is not needed for continuous recovery from
// the keep newest backups, nor for any older kept backup to reach
// consistency (pgBackRest always keeps that).
func (p *PgBackRest) ExpireArchive(ctx context.Context, keep int) error {
	_, err := p.run(ctx, "", "expire", []string{"--repo1-retention-archive=" + strconv.Itoa(keep), "--repo1-retention-archive-type=incr"}, nil)
	return err
}
