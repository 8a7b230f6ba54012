package etcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// keepRetryPause is the pause between two failed keep-alive attempts.
const keepRetryPause = 50 * time.Millisecond

// keeper sends the HA loop's keep-alives on one LeaseKeepAlive stream
// that stays open between renewals. It is KeepAliveOnce without a new
// gRPC stream per call: opening one and closing it each loop_wait was
// most of an idle agent's etcd cost (headers, trailers and flow control
// frames both ways, each a wake-up).
//
// The renewal keeps KeepAliveOnce's meaning: one request, sent when the
// caller asks, and its answer awaited; nothing is sent in the background,
// so a loop that stops renewing lets the lease expire. At most one request
// is in flight, and a renewal that does not get its answer (an error, the
// caller's deadline) closes the stream: an answer arriving late on it
// would otherwise be taken for the next request's, and the lease deadline
// is computed from that request's send time.
type keeper struct {
	mu     sync.Mutex
	open   func(context.Context) (pb.Lease_LeaseKeepAliveClient, error)
	stream pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
}

func newKeeper(cli *clientv3.Client) *keeper {
	return &keeper{open: func(ctx context.Context) (pb.Lease_LeaseKeepAliveClient, error) {
		// The client's connection carries its authentication and
		// endpoint balancing; require-leader, as the client's own
		// keep-alive streams do: a member cut from the quorum ends the
		// stream instead of leaving the request unanswered.
		return pb.NewLeaseClient(cli.ActiveConnection()).LeaseKeepAlive(clientv3.WithRequireLeader(ctx))
	}}
}

// keepAlive renews lease id once. Like KeepAliveOnce it retries on a
// fresh stream while the error is one etcd recovers from (Unavailable,
// Internal: an endpoint down, a leader lost) and ctx lasts; a kept stream
// that fails at its first use is retried once whatever the error (it may
// have ended while idle: etcd restarted, the connection replaced).
func (k *keeper) keepAlive(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for {
		kept := k.stream != nil
		resp, err := k.once(ctx, id)
		if err == nil {
			if resp.TTL <= 0 {
				return resp, rpctypes.ErrLeaseNotFound
			}
			return resp, nil
		}
		k.drop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if c := status.Code(err); !kept && c != codes.Unavailable && c != codes.Internal {
			return nil, rpctypes.Error(err)
		}
		if !kept {
			// A connection in transient failure refuses a new stream at
			// once: without a pause this would spin until ctx ends.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(keepRetryPause):
			}
		}
	}
}

// once sends one request and waits for its answer. ctx ending meanwhile
// cancels the stream; it is then dropped, answered or not.
func (k *keeper) once(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	if k.stream == nil {
		// The stream outlives this call's context: it has its own,
		// ended by drop. Opening it waits for a connection (and, with
		// etcd auth, a token), so ctx ending cancels that too.
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stopOpen := context.AfterFunc(ctx, cancel)
		s, err := k.open(sctx)
		if !stopOpen() {
			err = errors.Join(ctx.Err(), err)
		}
		if err != nil {
			cancel()
			return nil, err
		}
		k.stream, k.cancel = s, cancel
	}
	stop := context.AfterFunc(ctx, k.cancel)
	r, err := k.exchange(id)
	if !stop() {
		k.drop()
	}
	return r, err
}

func (k *keeper) exchange(id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	if err := k.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
		if errors.Is(err, io.EOF) {
			// The stream had ended: its status comes from Recv.
			_, err = k.stream.Recv()
		}
		return nil, err
	}
	r, err := k.stream.Recv()
	if err != nil {
		return nil, err
	}
	if r.ID != int64(id) {
		return nil, status.Error(codes.Internal, fmt.Sprintf("keep-alive answered for lease %x, sent for %x", r.ID, int64(id)))
	}
	return &clientv3.LeaseKeepAliveResponse{ResponseHeader: r.GetHeader(), ID: clientv3.LeaseID(r.ID), TTL: r.TTL}, nil
}

func (k *keeper) drop() {
	if k.cancel != nil {
		k.cancel()
	}
	k.stream, k.cancel = nil, nil
}

// close ends the stream.
func (k *keeper) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.drop()
}
