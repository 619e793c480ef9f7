package svc

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"

	"labctl/lab/shop/api"
)

type coupon struct {
	api.UnimplementedCouponServer
	base
	st CouponStore
}

// NewCoupon returns the coupon server over st, naming itself instance in
// its replies.
func NewCoupon(st CouponStore, instance string, log *slog.Logger) api.CouponServer {
	return &coupon{base: newBase("coupon", instance, log), st: st}
}

// Redeem uses a coupon code for an order, once per order id: a repeated
// call replays the first one's discount.
func (s *coupon) Redeem(ctx context.Context, req *api.RedeemRequest) (*api.RedeemReply, error) {
	if err := firstError(checkID("order_id", req.GetOrderId()), checkID("code", req.GetCode()), checkID("user", req.GetUser())); err != nil {
		return nil, err
	}
	if req.GetTotalCents() < 0 {
		return nil, api.Error(codes.InvalidArgument, api.ReasonInvalid, "total_cents must not be negative")
	}
	r, err := s.st.Redeem(ctx, req.GetOrderId(), req.GetCode(), req.GetUser(), req.GetTotalCents())
	if err != nil {
		return nil, s.fail("redeem "+req.GetCode()+" for order "+req.GetOrderId(), err)
	}
	return &api.RedeemReply{DiscountCents: r.DiscountCents, Replayed: r.Replayed, Instance: s.instance}, nil
}
