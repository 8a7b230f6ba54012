//go:build pprof

package main

// A profiling build only (go build -tags pprof): with PGWARDEN_PPROF set
// to a directory, every pgwarden process serves net/http/pprof on a free
// loopback port and writes its address to DIR/PID. The normal binary links
// none of this.

import (
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"
)

func init() {
	dir := os.Getenv("PGWARDEN_PPROF")
	if dir == "" {
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return
	}
	_ = os.WriteFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), []byte(l.Addr().String()), 0o644)
	// Fine-grained: an idle agent allocates and runs little.
	runtime.MemProfileRate = 64
	http.HandleFunc("/cpu", func(w http.ResponseWriter, r *http.Request) {
		secs, _ := strconv.Atoi(r.URL.Query().Get("seconds"))
		runtime.SetCPUProfileRate(1000) // pprof.StartCPUProfile then keeps it
		if err := pprof.StartCPUProfile(w); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		time.Sleep(time.Duration(secs) * time.Second)
		pprof.StopCPUProfile()
	})
	go func() { _ = http.Serve(l, nil) }()
}
