package main

import (
	"bytes"
	"compress/gzip"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

// demoFiles holds etcd.gz, the demo's etcd (cmd/demo-etcd), when
// scripts/build.sh built this binary.
//
//go:embed demoetcd
var demoFiles embed.FS

// demoEtcd returns the path of an etcd to run for the demo: the embedded
// one, written out into dir, else one on PATH (then it says so).
func demoEtcd(dir string) (path, from string, err error) {
	gz, err := demoFiles.ReadFile("demoetcd/etcd.gz")
	if errors.Is(err, fs.ErrNotExist) {
		if p, err := exec.LookPath("etcd"); err == nil {
			return p, "from PATH: " + p, nil
		}
		return "", "", errors.New("this pgwarden was built without the demo's etcd (`make build` embeds it) and no etcd is on PATH")
	}
	if err != nil {
		return "", "", fmt.Errorf("read the embedded etcd: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return "", "", fmt.Errorf("read the embedded etcd: %w", err)
	}
	path = filepath.Join(dir, "etcd-demo")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", "", fmt.Errorf("write the demo's etcd: %w", err)
	}
	if _, err := io.Copy(f, zr); err != nil {
		f.Close()
		return "", "", fmt.Errorf("write the demo's etcd: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", "", fmt.Errorf("write the demo's etcd: %w", err)
	}
	return path, "embedded", nil
}
