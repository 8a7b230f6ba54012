package etcd

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeKeepStream answers each request with answer (nil: never), and
// delivers whatever the test puts in late.
type fakeKeepStream struct {
	pb.Lease_LeaseKeepAliveClient
	ctx    context.Context
	answer func(*pb.LeaseKeepAliveRequest) *pb.LeaseKeepAliveResponse
	late   chan *pb.LeaseKeepAliveResponse
	ended  bool // Send fails as on a stream the server closed
	sent   int
}

func (f *fakeKeepStream) Send(r *pb.LeaseKeepAliveRequest) error {
	if f.ended {
		return io.EOF
	}
	f.sent++
	if f.answer != nil {
		if a := f.answer(r); a != nil {
			f.late <- a
		}
	}
	return nil
}

func (f *fakeKeepStream) Recv() (*pb.LeaseKeepAliveResponse, error) {
	if f.ended {
		return nil, status.Error(codes.Unavailable, "stream closed")
	}
	select {
	case r := <-f.late:
		return r, nil
	case <-f.ctx.Done():
		return nil, status.Error(codes.Canceled, "context canceled")
	}
}

func answerTTL(ttl int64) func(*pb.LeaseKeepAliveRequest) *pb.LeaseKeepAliveResponse {
	return func(r *pb.LeaseKeepAliveRequest) *pb.LeaseKeepAliveResponse {
		return &pb.LeaseKeepAliveResponse{ID: r.ID, TTL: ttl}
	}
}

// TestKeeperDropsAStreamItGaveUpOn: a renewal that times out leaves its
// stream; the answer etcd sends late on it is never taken for the next
// renewal's (whose deadline is computed from its own send time). A kept
// stream serves the renewals after; one that ended while idle is replaced
// within the same renewal.
func TestKeeperDropsAStreamItGaveUpOn(t *testing.T) {
	var streams []*fakeKeepStream
	next := []func(*pb.LeaseKeepAliveRequest) *pb.LeaseKeepAliveResponse{nil, answerTTL(9), answerTTL(11)}
	k := &keeper{open: func(ctx context.Context) (pb.Lease_LeaseKeepAliveClient, error) {
		s := &fakeKeepStream{ctx: ctx, late: make(chan *pb.LeaseKeepAliveResponse, 4), answer: next[len(streams)]}
		streams = append(streams, s)
		return s, nil
	}}
	renew := func(timeout time.Duration) (int64, error) {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		r, err := k.keepAlive(ctx, 7)
		if err != nil {
			return 0, err
		}
		return r.TTL, nil
	}

	// 1. etcd does not answer in time.
	if _, err := renew(50 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered renewal: %v; want the deadline", err)
	}
	if streams[0].ctx.Err() == nil {
		t.Fatal("the stream of the renewal given up on is still open")
	}
	// 2. Its answer arrives late, on that stream.
	streams[0].late <- &pb.LeaseKeepAliveResponse{ID: 7, TTL: 5}
	if ttl, err := renew(time.Second); err != nil || ttl != 9 {
		t.Fatalf("next renewal: ttl %d, %v; want 9 from its own request on a new stream (5 is the late answer)", ttl, err)
	}
	// 3. The stream is kept.
	for range 3 {
		if ttl, err := renew(time.Second); err != nil || ttl != 9 {
			t.Fatalf("renewal on the kept stream: ttl %d, %v", ttl, err)
		}
	}
	if len(streams) != 2 || streams[1].sent != 4 {
		t.Fatalf("%d streams, %d requests on the second; want 2 streams, 4 requests", len(streams), streams[1].sent)
	}
	// 4. The kept stream ended while idle (etcd restarted): the renewal
	// opens another and succeeds.
	streams[1].ended = true
	if ttl, err := renew(time.Second); err != nil || ttl != 11 {
		t.Fatalf("renewal after the kept stream ended: ttl %d, %v; want 11 on a third stream", ttl, err)
	}
	if len(streams) != 3 {
		t.Fatalf("%d streams; want 3", len(streams))
	}
}

// An answer for another lease is refused, and its stream dropped.
func TestKeeperRefusesAnotherLeasesAnswer(t *testing.T) {
	opens := 0
	k := &keeper{open: func(ctx context.Context) (pb.Lease_LeaseKeepAliveClient, error) {
		opens++
		return &fakeKeepStream{ctx: ctx, late: make(chan *pb.LeaseKeepAliveResponse, 4),
			answer: func(r *pb.LeaseKeepAliveRequest) *pb.LeaseKeepAliveResponse {
				return &pb.LeaseKeepAliveResponse{ID: r.ID + 1, TTL: 5}
			}}, nil
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := k.keepAlive(ctx, 7); err == nil {
		t.Fatal("an answer for lease 8 renewed lease 7")
	}
	if k.stream != nil || opens < 2 {
		t.Fatalf("stream kept %v, %d opened; want it dropped and retried", k.stream != nil, opens)
	}
}

// Opening a stream waits for a connection (and, with etcd auth, a token):
// the renewal's deadline bounds that too. (It did not: a black-holed
// endpoint held the keeper past retry_timeout, up to gRPC's connect
// timeout.)
func TestKeeperOpenHonoursTheDeadline(t *testing.T) {
	k := &keeper{open: func(ctx context.Context) (pb.Lease_LeaseKeepAliveClient, error) {
		select {
		case <-ctx.Done():
			return nil, status.Error(codes.Canceled, "context canceled")
		case <-time.After(10 * time.Second):
			return nil, errors.New("open was not cancelled")
		}
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := k.keepAlive(ctx, 7)
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took > 2*time.Second {
		t.Fatalf("renewal whose stream cannot open: %v after %s; want the deadline within 2 s", err, took)
	}
}
