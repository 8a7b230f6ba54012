// Command packaging builds pgwarden's .deb with nfpm from nfpm.yaml: run
// from the repository by `make deb` after `make build docs`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
)

func main() {
	config := flag.String("config", "packaging/nfpm.yaml", "nfpm configuration")
	version := flag.String("version", "", "package version (required)")
	out := flag.String("out", "bin", "directory for the .deb")
	flag.Parse()
	path, err := buildDeb(*config, *version, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

// buildDeb writes the .deb into dir and returns its path. Paths in the
// configuration are relative to the working directory (the repository).
func buildDeb(config, version, dir string) (string, error) {
	if version == "" {
		return "", errors.New("-version is required")
	}
	cfg, err := nfpm.ParseFileWithEnvMapping(config, func(k string) string {
		if k == "PGWARDEN_VERSION" {
			return version
		}
		return os.Getenv(k)
	})
	if err != nil {
		return "", fmt.Errorf("read %s: %w", config, err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return "", fmt.Errorf("%s: %w", config, err)
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("%s: %w", config, err)
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, pkg.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("package: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return path, nil
}
