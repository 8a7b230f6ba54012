//go:build !chaosplant

package pgproc

// plantedFence is false in every shipped build; see plant_on.go.
const plantedFence = false
