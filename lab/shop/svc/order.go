package svc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"labctl/lab/shop/api"
	"labctl/lab/shop/store"
)

// compensateTimeout bounds a compensating Release, which runs on even
// when the caller has gone.
const compensateTimeout = 2 * time.Second

type order struct {
	api.UnimplementedOrderServer
	base
	st  OrderStore
	inv api.InventoryClient
	cpn api.CouponClient
}

// NewOrder returns the order server: orders are kept in st, stock is
// deducted through inv and coupons redeemed through cpn; it names itself
// instance in the orders it creates.
func NewOrder(st OrderStore, inv api.InventoryClient, cpn api.CouponClient, instance string, log *slog.Logger) api.OrderServer {
	return &order{base: newBase("order", instance, log), st: st, inv: inv, cpn: cpn}
}

// finishTimeout bounds one Create, whatever its caller's deadline.
const finishTimeout = 5 * time.Second

// Create creates an order: it deducts the stock (Inventory), checks the
// price the client saw, redeems the coupon (Coupon) and stores the order.
// When the price or the coupon fails, the deduction is released if this
// call made it (one it reused belongs to an attempt still running). It is
// idempotent by order id: every step is recorded per order id, so a retry
// (or a concurrent duplicate) gets the first call's order, replayed, and
// never deducts twice. Errors of the inventory and coupon services reach
// the caller unchanged; a service that cannot be reached is Unavailable
// with reason NO_INSTANCE.
func (s *order) Create(ctx context.Context, req *api.CreateOrderRequest) (*api.OrderReply, error) {
	if err := checkCreate(req); err != nil {
		return nil, err
	}
	// Once begun, an order is finished even if its caller goes away, so a
	// deduction is not left without its order; bounded by finishTimeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	id := req.GetOrderId()
	if o, err := s.st.GetOrder(ctx, id); err == nil {
		return replay(o, req)
	} else if !errors.Is(err, store.ErrNoOrder) {
		return nil, s.fail("get order "+id, err)
	}
	d, err := s.inv.Deduct(ctx, &api.DeductRequest{OrderId: id, Sku: req.GetSku(), Quantity: req.GetQuantity()})
	if err != nil {
		return nil, s.downstream("inventory", err)
	}
	// undo gives the deduction back when this call made it.
	undo := func() {
		if !d.GetReplayed() {
			s.release(ctx, id)
		}
	}
	if seen := req.GetPriceCents(); seen != 0 && seen != d.GetPriceCents() {
		undo()
		return nil, api.Error(codes.FailedPrecondition, api.ReasonPriceChanged,
			fmt.Sprintf("sku %s: price is %d cents, not %d", req.GetSku(), d.GetPriceCents(), seen))
	}
	gross := d.GetPriceCents() * int64(req.GetQuantity())
	var discount int64
	if code := req.GetCoupon(); code != "" {
		r, err := s.cpn.Redeem(ctx, &api.RedeemRequest{OrderId: id, Code: code, User: req.GetUser(), TotalCents: gross})
		if err != nil {
			undo()
			return nil, s.downstream("coupon", err)
		}
		discount = r.GetDiscountCents()
	}
	o, created, err := s.st.InsertOrder(ctx, store.Order{
		ID:                id,
		User:              req.GetUser(),
		SKU:               req.GetSku(),
		Quantity:          req.GetQuantity(),
		PriceCents:        d.GetPriceCents(),
		DiscountCents:     discount,
		TotalCents:        max(gross-discount, 0),
		Coupon:            req.GetCoupon(),
		Region:            req.GetRegion(),
		Controller:        req.GetController(),
		OrderInstance:     s.instance,
		InventoryInstance: d.GetInstance(),
		ClientAddr:        req.GetClientAddr(),
		StockLeft:         d.GetStockLeft(),
		CASAttempts:       d.GetAttempts(),
	})
	if errors.Is(err, store.ErrNoDeduction) {
		// Released past its deadline (or by another attempt): nothing is
		// stored, and a retry deducts anew.
		return nil, api.Error(codes.Aborted, api.ReasonContention, err.Error())
	}
	if err != nil {
		// The deduction and the coupon stay recorded for the order id: a
		// retry replays them and stores the order. Without one, the
		// sweepers give the stock back after the deduction's deadline.
		return nil, s.fail("insert order "+id, err)
	}
	if !created { // a concurrent duplicate stored it first
		return replay(o, req)
	}
	return orderReply(o, false), nil
}

// Get returns a stored order; NotFound when there is none.
func (s *order) Get(ctx context.Context, req *api.GetOrderRequest) (*api.OrderReply, error) {
	if err := checkID("order_id", req.GetOrderId()); err != nil {
		return nil, err
	}
	o, err := s.st.GetOrder(ctx, req.GetOrderId())
	if errors.Is(err, store.ErrNoOrder) {
		return nil, status.Errorf(codes.NotFound, "order %s not found", req.GetOrderId())
	}
	if err != nil {
		return nil, s.fail("get order "+req.GetOrderId(), err)
	}
	return orderReply(o, false), nil
}

// checkCreate checks the fields of a Create request.
func checkCreate(req *api.CreateOrderRequest) error {
	err := firstError(checkID("order_id", req.GetOrderId()), checkID("user", req.GetUser()),
		checkID("sku", req.GetSku()), checkQuantity(req.GetQuantity()))
	switch {
	case err != nil:
		return err
	case len(req.GetCoupon()) > MaxIDLen:
		return api.Error(codes.InvalidArgument, api.ReasonInvalid, fmt.Sprintf("coupon must be at most %d bytes", MaxIDLen))
	case req.GetPriceCents() < 0:
		return api.Error(codes.InvalidArgument, api.ReasonInvalid, "price_cents must not be negative")
	}
	return nil
}

// replay answers a Create whose order id is stored already: with the
// stored order when the request asks for the same thing, else
// ORDER_MISMATCH.
func replay(o store.Order, req *api.CreateOrderRequest) (*api.OrderReply, error) {
	seen := req.GetPriceCents()
	if o.User != req.GetUser() || o.SKU != req.GetSku() || o.Quantity != req.GetQuantity() ||
		o.Coupon != req.GetCoupon() || seen != 0 && seen != o.PriceCents {
		return nil, api.Error(codes.AlreadyExists, api.ReasonOrderMismatch, api.OrderIDTaken(o.ID))
	}
	return orderReply(o, true), nil
}

// downstream is the caller's error for a failed call to the inventory or
// coupon service: the callee's own error unchanged (code, message and
// reason), or Unavailable with reason NO_INSTANCE when the service could
// not answer.
func (s *order) downstream(service string, err error) error {
	c := status.Code(err)
	if api.Reason(err) != "" || (c != codes.Unavailable && c != codes.DeadlineExceeded) {
		return err
	}
	s.errs.Error(service+" unavailable", "err", err)
	// It may have acted before it failed to answer: the client should
	// retry with the same order id, which replays whatever was done.
	return api.Error(codes.Unavailable, api.ReasonNoInstance,
		service+" unavailable: "+status.Convert(err).Message()+"; retry with the same order id")
}

// release gives back order id's deduction after a later step failed, even
// if the caller has gone. A failure is logged: the stock stays taken until
// a retry of the order completes it, or the sweepers give it back after
// the deduction's deadline (Sweep).
func (s *order) release(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compensateTimeout)
	defer cancel()
	if _, err := s.inv.Release(ctx, &api.ReleaseRequest{OrderId: id}); err != nil {
		s.errs.Error("compensation failed: release deduction", "order", id, "err", err)
	}
}

// orderReply is the reply carrying o.
func orderReply(o store.Order, replayed bool) *api.OrderReply {
	return &api.OrderReply{
		OrderId:           o.ID,
		User:              o.User,
		Sku:               o.SKU,
		Quantity:          o.Quantity,
		PriceCents:        o.PriceCents,
		DiscountCents:     o.DiscountCents,
		TotalCents:        o.TotalCents,
		Coupon:            o.Coupon,
		Region:            o.Region,
		Controller:        o.Controller,
		OrderInstance:     o.OrderInstance,
		InventoryInstance: o.InventoryInstance,
		StockLeft:         o.StockLeft,
		CasAttempts:       o.CASAttempts,
		Replayed:          replayed,
		Created:           o.Created.UTC().Format(time.RFC3339Nano),
		ClientAddr:        o.ClientAddr,
	}
}
