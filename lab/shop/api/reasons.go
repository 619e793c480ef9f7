package api

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits of an order, the same at every tier.
const (
	MaxQuantity = 100 // units of one order
	MaxIDLen    = 128 // bytes of an order id, user, SKU or coupon code
)

// Domain is the ErrorInfo domain of the shop's RPC errors.
const Domain = "shop.labctl"

// Reasons carried in a google.rpc.ErrorInfo detail of a failed call, so a
// caller (the controller) can tell the client exactly what went wrong.
const (
	ReasonInvalid         = "INVALID"          // a field is missing or malformed
	ReasonUnknownSKU      = "UNKNOWN_SKU"      // no such product
	ReasonOutOfStock      = "OUT_OF_STOCK"     // not enough stock left
	ReasonContention      = "CONTENTION"       // compare-and-set lost every bounded retry
	ReasonOrderMismatch   = "ORDER_MISMATCH"   // the order id exists with other contents
	ReasonPriceChanged    = "PRICE_CHANGED"    // the client's price is not the product's
	ReasonUnknownCoupon   = "UNKNOWN_COUPON"   // no such coupon code
	ReasonCouponExhausted = "COUPON_EXHAUSTED" // the coupon has no uses left
	ReasonCouponMinimum   = "COUPON_MINIMUM"   // the order total is below the coupon's minimum
	ReasonNoInstance      = "NO_INSTANCE"      // the registry lists no instance of a needed service
)

// Error is a gRPC status error with code c, message msg and the reason in
// an ErrorInfo detail.
func Error(c codes.Code, reason, msg string) error {
	st := status.New(c, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); err == nil {
		st = d
	}
	return st.Err()
}

// OrderIDTaken is the message of every ORDER_MISMATCH: it says only that
// the id is taken, never what the stored order holds (anyone who guesses
// or sees an id could otherwise read another customer's order).
// An empty id says "the order id".
func OrderIDTaken(id string) string {
	what := "the order id"
	if id != "" {
		what = "order id " + id
	}
	return what + " is already taken by an order with other contents: a retry must send the same order; use a new order id for a new order"
}

// Reason returns the ErrorInfo reason of a gRPC error, or "".
func Reason(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return ""
	}
	for _, d := range se.GRPCStatus().Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == Domain {
			return info.Reason
		}
	}
	return ""
}
