package svc

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"labctl/lab/shop/api"
	"labctl/lab/shop/store"
)

// An order id reused with other contents is refused with a message that
// says the id is taken and nothing of the stored order: whoever sends an
// id must not learn another customer's user, sku, quantity, coupon or price.
func TestMismatchRevealsNothing(t *testing.T) {
	s := startShop(t, 10, "", "")
	first := createReq("o-1", 3)
	first.User, first.Coupon = "carol-secret", "SAVE5"
	if _, err := s.order.Create(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	_, err := s.order.Create(t.Context(), createReq("o-1", 1))
	wantError(t, err, codes.AlreadyExists, api.ReasonOrderMismatch)
	if msg := status.Convert(err).Message(); msg != api.OrderIDTaken("o-1") {
		t.Errorf("message %q, want %q", msg, api.OrderIDTaken("o-1"))
	}

	// The same from the inventory's own check (the store's message names
	// what the id reserved).
	s.inv.fail = fmt.Errorf("order o-2 reserved 7 of flash-9, not 1 of flash-1: %w", store.ErrOrderMismatch)
	_, err = s.order.Create(t.Context(), createReq("o-2", 1))
	wantError(t, err, codes.AlreadyExists, api.ReasonOrderMismatch)
	msg := status.Convert(err).Message()
	for _, leak := range []string{"carol", "7", "flash-9", "SAVE5", "1999"} {
		if strings.Contains(msg, leak) {
			t.Errorf("message %q reveals %q", msg, leak)
		}
	}
	if !strings.Contains(msg, "o-2") || !strings.Contains(msg, "already taken") {
		t.Errorf("message %q does not say order id o-2 is taken", msg)
	}
}
