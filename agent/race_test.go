//go:build race

package agent

// The race detector slows the simulation about eightfold; make test runs
// the full count in its second, race-free pass.
const defaultSimSeeds = 150
