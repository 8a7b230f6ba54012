// Package config reads a node's YAML configuration file and the cluster's
// dynamic configuration: defaults first, then the file, then Validate once,
// before anything is touched. Unknown keys are errors; every problem is
// reported at once, each naming the key, the value and the rule.
package config
