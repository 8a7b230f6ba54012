//go:build !race

package agent

const defaultSimSeeds = 1000
