// Command demo-etcd is the single-member etcd that `pgwarden demo` runs.
//
// It is built by scripts/build.sh and embedded, compressed, in the
// pgwarden binary, which writes it out and runs it only for the demo. The
// etcd server lives in its own executable so the agent, the watchdog and
// the CLI do not link it: its packages' initialisation alone made every
// pgwarden process 6 MiB larger.
//
// It takes the subset of etcd's own flags the demo passes, so an etcd on
// PATH can stand in for it.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "demo-etcd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("demo-etcd", flag.ContinueOnError)
	name := fs.String("name", "demo", "member name")
	dir := fs.String("data-dir", "", "data directory")
	client := fs.String("listen-client-urls", "", "client URL")
	fs.String("advertise-client-urls", "", "ignored: the client URL is advertised")
	peer := fs.String("listen-peer-urls", "", "peer URL")
	fs.String("initial-advertise-peer-urls", "", "ignored: the peer URL is advertised")
	fs.String("initial-cluster", "", "ignored: a cluster of this member alone")
	logLevel := fs.String("log-level", "fatal", "etcd's log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *client == "" || *peer == "" {
		return fmt.Errorf("--data-dir, --listen-client-urls and --listen-peer-urls are required")
	}
	cu, err := url.Parse(*client)
	if err != nil {
		return fmt.Errorf("--listen-client-urls: %w", err)
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		return fmt.Errorf("--listen-peer-urls: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir, cfg.LogLevel = *name, *dir, *logLevel
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	defer e.Close()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		return fmt.Errorf("etcd not ready within 30s")
	case <-stop:
		return nil
	}
	select {
	case <-stop:
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}
