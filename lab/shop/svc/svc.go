// Package svc holds the shop's gRPC servers: the order service (the
// composite tier, which calls the others) and the inventory and coupon
// services (the basic tier, over PostgreSQL and the AZ's Redis). The servers
// see their stores through the small interfaces below, which
// labctl/lab/shop/store satisfies.
package svc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"labctl/lab/shop/api"
	"labctl/lab/shop/store"
)

// InventoryStore is the inventory service's view of the database.
type InventoryStore interface {
	Product(ctx context.Context, sku string) (store.Product, error)
	Deduct(ctx context.Context, orderID, sku string, qty int32) (store.Deduction, error)
	Release(ctx context.Context, orderID string) (bool, error)
}

// CouponStore is the coupon service's view of the database.
type CouponStore interface {
	Redeem(ctx context.Context, orderID, code, user string, totalCents int64) (store.Redemption, error)
}

// OrderStore is the order service's view of the database.
type OrderStore interface {
	// InsertOrder stores o unless its id exists; it returns the stored
	// order and whether this call created it.
	InsertOrder(ctx context.Context, o store.Order) (store.Order, bool, error)
	GetOrder(ctx context.Context, id string) (store.Order, error)
}

// ProductCache is the AZ's product cache (Redis). A failing cache is a
// miss: the inventory service then reads the database.
type ProductCache interface {
	Get(ctx context.Context, sku string) (store.Product, bool)
	Set(ctx context.Context, p store.Product)
}

// The database satisfies the stores.
var (
	_ InventoryStore = (*store.Store)(nil)
	_ CouponStore    = (*store.Store)(nil)
	_ OrderStore     = (*store.Store)(nil)
)

// Limits of a request's fields.
const (
	MaxQuantity = api.MaxQuantity // items of one SKU in one order
	MaxIDLen    = api.MaxIDLen    // bytes of an order id, user, SKU or coupon code
)

// MinPingInterval is the shortest keepalive ping interval Serve accepts
// from a client; a client pinging more often is disconnected.
const MinPingInterval = 5 * time.Second

// stopGrace bounds a graceful stop before in-flight calls are cut.
const stopGrace = 500 * time.Millisecond

// Serve registers the servers (register) and the standard health service,
// every service SERVING, on a gRPC server listening on addr. It returns
// when ctx ends, after a graceful stop bounded by stopGrace, or when serving fails.
func Serve(ctx context.Context, addr string, register func(*grpc.Server), log *slog.Logger) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("grpc listen %s: %w", addr, err)
	}
	return ServeListener(ctx, lis, register, log)
}

// ServeListener is Serve on an open listener, which it closes.
func ServeListener(ctx context.Context, lis net.Listener, register func(*grpc.Server), log *slog.Logger) error {
	srv := grpc.NewServer(
		// Peers are on the LAN: find dead ones within seconds, and let
		// clients keep idle connections warm.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: MinPingInterval, PermitWithoutStream: true}),
	)
	register(srv)
	hs := health.NewServer() // the server as a whole ("") is SERVING
	for name := range srv.GetServiceInfo() {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(srv, hs)

	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	log.Info("serving grpc", "listen", lis.Addr().String())
	select {
	case err := <-done:
		return fmt.Errorf("grpc serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(stopGrace):
		log.Warn("graceful stop timed out; cutting calls", "grace", stopGrace)
		srv.Stop()
		<-stopped
	}
	<-done
	return nil
}

// checkID checks a required identifier field of a request.
func checkID(field, v string) error {
	if v == "" || len(v) > MaxIDLen {
		return api.Error(codes.InvalidArgument, api.ReasonInvalid,
			fmt.Sprintf("%s must be 1..%d bytes", field, MaxIDLen))
	}
	return nil
}

// checkQuantity checks a request's quantity.
func checkQuantity(q int32) error {
	if q < 1 || q > MaxQuantity {
		return api.Error(codes.InvalidArgument, api.ReasonInvalid,
			fmt.Sprintf("quantity must be 1..%d, not %d", MaxQuantity, q))
	}
	return nil
}

// storeError is how a store error reaches a caller.
type storeError struct {
	err    error
	code   codes.Code
	reason string
}

// storeErrors are the store errors a caller can act on.
var storeErrors = []storeError{
	{store.ErrUnknownSKU, codes.NotFound, api.ReasonUnknownSKU},
	{store.ErrOutOfStock, codes.FailedPrecondition, api.ReasonOutOfStock},
	{store.ErrContention, codes.Aborted, api.ReasonContention},
	{store.ErrOrderMismatch, codes.AlreadyExists, api.ReasonOrderMismatch},
	{store.ErrUnknownCoupon, codes.NotFound, api.ReasonUnknownCoupon},
	{store.ErrCouponExhausted, codes.FailedPrecondition, api.ReasonCouponExhausted},
	{store.ErrCouponMinimum, codes.FailedPrecondition, api.ReasonCouponMinimum},
}

// base is what every server has: its service and instance names and a
// throttled error log.
type base struct {
	service  string // "inventory", "coupon", "order"
	instance string
	errs     *errorLog
}

func newBase(service, instance string, log *slog.Logger) base {
	return base{service: service, instance: instance, errs: newErrorLog(log.With("service", service), time.Second)}
}

// fail turns the error of store call op into the call's RPC error: the
// store's domain errors keep their message and get their reason, an ended
// call context its own code; anything else is Internal, and logged.
func (b *base) fail(op string, err error) error {
	for _, e := range storeErrors {
		if errors.Is(err, e.err) {
			msg := err.Error()
			if e.err == store.ErrOrderMismatch {
				msg = op + ": " + api.OrderIDTaken("") // not what the stored order holds
			}
			return api.Error(e.code, e.reason, msg)
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	b.errs.Error(op+" failed", "err", err)
	return status.Errorf(codes.Internal, "%s: %v", b.service, err)
}

// errorLog logs errors at most once per interval and counts the ones it
// drops, so a failing dependency under load cannot flood the log.
type errorLog struct {
	log     *slog.Logger
	every   time.Duration
	next    atomic.Int64 // unix nanoseconds of the next allowed entry
	dropped atomic.Int64
}

func newErrorLog(log *slog.Logger, every time.Duration) *errorLog {
	return &errorLog{log: log, every: every}
}

// Error logs msg unless an entry was logged less than an interval ago.
func (l *errorLog) Error(msg string, args ...any) {
	now := time.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(l.every)) {
		l.dropped.Add(1)
		return
	}
	if n := l.dropped.Swap(0); n > 0 {
		args = append(args, "dropped", n)
	}
	l.log.Error(msg, args...)
}
