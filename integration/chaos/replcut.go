package chaos

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Shopify/toxiproxy/v2/toxics"
)

// The replication link and PgBouncer's server connections reach a primary
// through the same address (its postgres.connect_address, one proxy), so a
// cut of the whole proxy would also cut the pooler. The replcut toxic,
// installed upstream on every PostgreSQL proxy from the start, reads each
// connection's startup packet and, while its switch is on, closes only the
// connections that asked for replication (walreceivers, pg_basebackup):
// clients, PgBouncer and the agents' probes pass.

// Switch turns a replcut toxic on and off; toxics find theirs by name.
type Switch struct{ on atomic.Bool }

// Set turns the cut on (true) or off.
func (s *Switch) Set(on bool) { s.on.Store(on) }

var (
	switchesMu sync.Mutex
	switches   = map[string]*Switch{}
)

// ReplSwitch returns the switch of that name, making it on first use.
func ReplSwitch(name string) *Switch {
	switchesMu.Lock()
	defer switchesMu.Unlock()
	s := switches[name]
	if s == nil {
		s = &Switch{}
		switches[name] = s
	}
	return s
}

// ReplCut is the toxic; Switch names its switch.
type ReplCut struct {
	Switch string `json:"switch"`
}

type replState struct {
	buf     []byte
	decided bool
	repl    bool
}

// NewState is per connection.
func (t *ReplCut) NewState() interface{} { return new(replState) }

// replCheck is how often a replication connection looks at its switch
// while no data flows (a streaming replica may send nothing for seconds).
const replCheck = 50 * time.Millisecond

// Pipe forwards everything, learning from the first packets whether the
// connection is a replication one; such a connection is closed while the
// switch is on.
func (t *ReplCut) Pipe(stub *toxics.ToxicStub) {
	st, _ := stub.State.(*replState)
	if st == nil {
		st = new(replState)
	}
	sw := ReplSwitch(t.Switch)
	tick := time.NewTicker(replCheck)
	defer tick.Stop()
	for {
		select {
		case <-stub.Interrupt:
			return
		case <-tick.C:
			if st.repl && sw.on.Load() {
				stub.Close()
				return
			}
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			if !st.decided {
				st.buf = append(st.buf, c.Data...)
				st.repl, st.decided = classify(st.buf)
				if st.decided {
					st.buf = nil
				}
			}
			if st.repl && sw.on.Load() {
				stub.Close()
				return
			}
			stub.Output <- c
		}
	}
}

// Protocol codes of the packets a client may send before its startup
// message.
const (
	codeProtocol3 = 196608
	codeSSL       = 80877103
	codeGSSENC    = 80877104
)

// classify reads PostgreSQL's first client packets: SSL and GSS requests
// are skipped, the startup message's parameters are read; a "replication"
// parameter other than false/off/no/0 makes it a replication connection.
// It returns decided=false while more bytes are needed.
func classify(b []byte) (repl, decided bool) {
	for {
		if len(b) < 8 {
			return false, false
		}
		n := int(binary.BigEndian.Uint32(b))
		code := binary.BigEndian.Uint32(b[4:])
		if n < 8 || n > 10000 {
			return false, true
		}
		if code == codeSSL || code == codeGSSENC {
			b = b[8:]
			continue
		}
		if code != codeProtocol3 {
			return false, true // a cancel request or something else
		}
		if len(b) < n {
			return false, false
		}
		params := b[8:n]
		for len(params) > 0 {
			k, rest := cstring(params)
			if k == "" {
				break
			}
			v, rest2 := cstring(rest)
			params = rest2
			if k == "replication" {
				switch v {
				case "false", "off", "no", "0":
					return false, true
				}
				return true, true
			}
		}
		return false, true
	}
}

func cstring(b []byte) (string, []byte) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:]
		}
	}
	return string(b), nil
}

func init() {
	toxics.Register("replcut", new(ReplCut))
}
