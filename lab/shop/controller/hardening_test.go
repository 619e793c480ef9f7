package controller

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"labctl/lab/shop/api"
)

// A repeated key would otherwise be decoded with the last one winning:
// {"quantity":1,"quantity":100} would order 100 of what looked like 1.
func TestPurchaseDuplicateKeys(t *testing.T) {
	for _, tc := range []struct{ body, key string }{
		{`{"sku":"flash-1","quantity":1,"quantity":100,"user":"ann","orderId":"o-1"}`, "quantity"},
		// encoding/json matches field names without regard to case.
		{`{"sku":"flash-1","quantity":1,"QUANTITY":100,"user":"ann","orderId":"o-1"}`, "QUANTITY"},
		{`{"sku":"flash-1","quantity":1,"user":"ann","user":"bob","orderId":"o-1"}`, "user"},
		{`{"order":{"price":"1.00","price":"68"},"sku":"flash-1","quantity":1,"user":"ann","orderId":"o-1"}`, "order.price"},
		{`{"order":{},"sku":"flash-1","quantity":1,"user":"ann","orderId":"o-1","order":{"price":"68"}}`, "order"},
	} {
		f := &fakeOrders{}
		wantError(t, post(newHandler(f), tc.body), http.StatusBadRequest, "invalid", "duplicate key", `"`+tc.key+`"`)
		if n := len(f.calls()); n != 0 {
			t.Errorf("%s: the order service was called %d time(s)", tc.body, n)
		}
	}
	// The same name in different objects is no duplicate.
	ok := `{"order":{"Author":"ann"},"sku":"flash-1","quantity":1,"user":"ann","orderId":"o-1"}`
	if rec := post(newHandler(&fakeOrders{}), ok); rec.Code != http.StatusCreated {
		t.Errorf("%s: %d %s", ok, rec.Code, rec.Body)
	}
}

// A replay with other contents says the id is taken, and nothing of the
// stored order, whatever the order service's message holds.
func TestPurchaseMismatchRevealsNothing(t *testing.T) {
	secret := `order o-1 exists with other contents (user bob, sku flash-2, quantity 7, coupon "VIP", price 6800 cents)`
	f := &fakeOrders{create: func(context.Context, *api.CreateOrderRequest) (*api.OrderReply, error) {
		return nil, api.Error(codes.AlreadyExists, api.ReasonOrderMismatch, secret)
	}}
	body := wantError(t, post(newHandler(f), validBody), http.StatusUnprocessableEntity, "order_mismatch", "o-1", "new order id")
	for _, leak := range []string{"bob", "flash-2", "7", "VIP", "6800"} {
		if strings.Contains(body.Error.Message, leak) {
			t.Errorf("message %q reveals %q of the stored order", body.Error.Message, leak)
		}
	}
}

// Every route that takes a body wants JSON; the others take no body and
// ignore the header. Two Content-Type headers are ambiguous.
func TestContentTypeEveryPath(t *testing.T) {
	products := &fakeInventory{}
	h := Handler(Config{Region: "east", Instance: "east-ctl1", Orders: &fakeOrders{get: func(context.Context, *api.GetOrderRequest) (*api.OrderReply, error) {
		return &api.OrderReply{OrderId: "o-1"}, nil
	}}, Products: products})
	send := func(method, path string, ct ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(validBody))
		for _, c := range ct {
			req.Header.Add("Content-Type", c)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, ct := range [][]string{nil, {"text/plain"}, {"application/json", "text/plain"}, {"text/plain", "application/json"}, {"application/jsonx"}} {
		t.Run(strings.Join(ct, "+"), func(t *testing.T) {
			wantError(t, send("POST", "/purchaseOrder", ct...), http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json")
		})
	}
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8"} {
		if rec := send("POST", "/purchaseOrder", ct); rec.Code/100 != 2 {
			t.Errorf("POST %q: %d %s", ct, rec.Code, rec.Body)
		}
	}
	for _, path := range []string{"/orders/o-1", "/products/phone-x", "/healthz"} {
		if rec := send("GET", path, "text/plain"); rec.Code != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
	}
}
