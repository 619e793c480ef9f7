package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"labctl/lab/shop/api"
)

// fakeOrders is an order service: by default it creates an order per
// new id and replays it for a known one; create and get override that.
type fakeOrders struct {
	mu     sync.Mutex
	seen   map[string]bool
	got    []*api.CreateOrderRequest
	create func(context.Context, *api.CreateOrderRequest) (*api.OrderReply, error)
	get    func(context.Context, *api.GetOrderRequest) (*api.OrderReply, error)
}

func (f *fakeOrders) Create(ctx context.Context, in *api.CreateOrderRequest, _ ...grpc.CallOption) (*api.OrderReply, error) {
	f.mu.Lock()
	f.got = append(f.got, in)
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	replayed := f.seen[in.OrderId]
	f.seen[in.OrderId] = true
	create := f.create
	f.mu.Unlock()
	if create != nil {
		return create(ctx, in)
	}
	return &api.OrderReply{OrderId: in.OrderId, User: in.User, Sku: in.Sku, Quantity: in.Quantity,
		PriceCents: 6800, DiscountCents: 500, TotalCents: 6800*int64(in.Quantity) - 500, Coupon: in.Coupon,
		Region: in.Region, Controller: in.Controller, OrderInstance: "east-app1", InventoryInstance: "east-app2",
		StockLeft: 41, CasAttempts: 2, Replayed: replayed, Created: "2018-11-11T00:00:00Z", ClientAddr: in.ClientAddr}, nil
}

func (f *fakeOrders) Get(ctx context.Context, in *api.GetOrderRequest, _ ...grpc.CallOption) (*api.OrderReply, error) {
	return f.get(ctx, in)
}

// calls is how many Create calls the fake has seen.
func (f *fakeOrders) calls() []*api.CreateOrderRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*api.CreateOrderRequest(nil), f.got...)
}

func newHandler(f *fakeOrders) http.Handler {
	return Handler(Config{Region: "east", Instance: "east-ctl1", Orders: f})
}

const validBody = `{"order":{"date":"2018-11-11","className":"phone","Author":"ann","price":"68"},` +
	`"sku":"flash-1","quantity":2,"user":"ann","orderId":"o-1","coupon":"SAVE5"}`

// post sends body to /purchaseOrder as JSON with extra headers.
func post(h http.Handler, body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/purchaseOrder", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// withField returns validBody with key set to value (a JSON value), or
// removed when value is "".
func withField(t *testing.T, key, value string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(validBody), &m); err != nil {
		t.Fatal(err)
	}
	if value == "" {
		delete(m, key)
	} else {
		m[key] = json.RawMessage(value)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantError checks an error answer's status, body and that its message
// mentions every one of mention.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, code string, mention ...string) ErrorBody {
	t.Helper()
	var body ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("status %d, body %q is not an ErrorBody: %v", rec.Code, rec.Body, err)
	}
	if rec.Code != status || body.Error.Status != status || body.Error.Code != code {
		t.Errorf("got %d %+v, want %d %s", rec.Code, body.Error, status, code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	for _, m := range mention {
		if !strings.Contains(body.Error.Message, m) {
			t.Errorf("message %q does not mention %q", body.Error.Message, m)
		}
	}
	return body
}

func TestPurchaseCreatedThenReplayed(t *testing.T) {
	f := &fakeOrders{}
	h := newHandler(f)
	rec := post(h, validBody)
	if rec.Code != http.StatusCreated {
		t.Fatalf("first POST: %d %s, want 201", rec.Code, rec.Body)
	}
	if rec.Header().Get("X-Labctl-Region") != "east" || rec.Header().Get("X-Labctl-Controller") != "east-ctl1" {
		t.Errorf("headers %v lack the region and controller", rec.Header())
	}
	if loc := rec.Header().Get("Location"); loc != "/orders/o-1" {
		t.Errorf("Location %q", loc)
	}
	var got OrderResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := OrderResponse{OrderID: "o-1", User: "ann", SKU: "flash-1", Quantity: 2, Price: "68.00", Discount: "5.00",
		Total: "131.00", Coupon: "SAVE5", Region: "east", Controller: "east-ctl1", OrderInstance: "east-app1",
		InventoryInstance: "east-app2", Client: "192.0.2.1:1234", StockLeft: 41, CASAttempts: 2, Created: "2018-11-11T00:00:00Z"}
	if got != want {
		t.Errorf("answer\n %+v\nwant\n %+v", got, want)
	}
	sent := f.calls()[0]
	if sent.PriceCents != 6800 || sent.Region != "east" || sent.Controller != "east-ctl1" || sent.ClientAddr != "192.0.2.1:1234" ||
		sent.OrderId != "o-1" || sent.Coupon != "SAVE5" || sent.Quantity != 2 {
		t.Errorf("order service got %v", sent)
	}

	rec = post(h, validBody)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"replayed":true`) {
		t.Errorf("retried POST: %d %s, want 200 replayed", rec.Code, rec.Body)
	}
	if rec.Header().Get("Location") != "" {
		t.Error("a replay answered with Location as if created")
	}
}

func TestPurchaseOrderIDSources(t *testing.T) {
	noID := withField(t, "orderId", "")
	for _, tc := range []struct {
		name, body, key string
		status          int
		id              string   // sent to the order service when status is 201
		mention         []string // in the error message otherwise
	}{
		{"body only", validBody, "", 201, "o-1", nil},
		{"header only", noID, "k-42", 201, "k-42", nil},
		{"both equal", validBody, "o-1", 201, "o-1", nil},
		{"both differ", validBody, "k-42", 400, "", []string{"orderId", "Idempotency-Key", "differ"}},
		{"neither", noID, "", 400, "", []string{"orderId or Idempotency-Key required"}},
		{"bad header", noID, "has space", 400, "", []string{"Idempotency-Key"}},
		{"bad body id", withField(t, "orderId", `"`+strings.Repeat("x", 65)+`"`), "", 400, "", []string{"orderId"}},
		{"bad body id, good header", withField(t, "orderId", `"o 1"`), "k-42", 400, "", []string{"orderId must be"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeOrders{}
			var hdr []string
			if tc.key != "" {
				hdr = []string{"Idempotency-Key", tc.key}
			}
			rec := post(newHandler(f), tc.body, hdr...)
			if tc.status != 201 {
				wantError(t, rec, tc.status, "invalid", tc.mention...)
				if len(f.calls()) != 0 {
					t.Error("the order service was called for a refused request")
				}
				return
			}
			if rec.Code != 201 || len(f.calls()) != 1 || f.calls()[0].OrderId != tc.id {
				t.Errorf("%d %s, calls %v, want 201 with id %s", rec.Code, rec.Body, f.calls(), tc.id)
			}
		})
	}
}

func TestPurchaseValidation(t *testing.T) {
	long := strings.Repeat("a", 65)
	for _, tc := range []struct {
		name, body string
		mention    []string
	}{
		{"no sku", withField(t, "sku", ""), []string{"sku", "required"}},
		{"sku upper case", withField(t, "sku", `"Flash-1"`), []string{"sku"}},
		{"sku leading hyphen", withField(t, "sku", `"-flash"`), []string{"sku"}},
		{"sku too long", withField(t, "sku", `"`+long+`"`), []string{"sku"}},
		{"quantity missing", withField(t, "quantity", ""), []string{"quantity", "got 0"}},
		{"quantity 0", withField(t, "quantity", "0"), []string{"quantity"}},
		{"quantity 101", withField(t, "quantity", "101"), []string{"quantity", "101"}},
		{"quantity negative", withField(t, "quantity", "-3"), []string{"quantity"}},
		{"quantity string", withField(t, "quantity", `"two"`), []string{"quantity", "byte"}},
		{"quantity fraction", withField(t, "quantity", `1.5`), []string{"quantity"}},
		{"quantity overflow", withField(t, "quantity", `99999999999`), []string{"quantity"}},
		{"no user", withField(t, "user", ""), []string{"user", "required"}},
		{"user too long", withField(t, "user", `"`+strings.Repeat("é", 65)+`"`), []string{"user", "64"}},
		{"user control char", withField(t, "user", `"ann\u0007"`), []string{"user", "printable"}},
		{"user bad utf-8", withField(t, "user", "\"ann\xff\""), []string{"user"}},
		{"orderId bad", withField(t, "orderId", `"o/1"`), []string{"orderId"}},
		{"coupon lower case", withField(t, "coupon", `"save5"`), []string{"coupon"}},
		{"coupon too long", withField(t, "coupon", `"`+strings.Repeat("A", 33)+`"`), []string{"coupon"}},
		{"price three decimals", withField(t, "order", `{"price":"68.001"}`), []string{"order.price"}},
		{"price not a number", withField(t, "order", `{"price":"cheap"}`), []string{"order.price"}},
		{"price negative", withField(t, "order", `{"price":"-1"}`), []string{"order.price"}},
		{"price zero", withField(t, "order", `{"price":"0.00"}`), []string{"order.price"}},
		{"price as number", withField(t, "order", `{"price":68}`), []string{"order.price"}},
		{"unknown field", withField(t, "color", `"red"`), []string{`unknown field "color"`}},
		{"unknown story field", withField(t, "order", `{"pages":3}`), []string{`"pages"`}},
		{"syntax error", `{"sku" "flash-1"}`, []string{"malformed JSON", "byte 8"}},
		{"truncated", `{"sku":"flash-1",`, []string{"ends inside"}},
		{"trailing data", validBody + ` {}`, []string{"after the order object", fmt.Sprintf("byte %d", len(validBody))}},
		{"empty body", ``, []string{"empty body"}},
		{"not an object", `[1,2]`, []string{"array"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeOrders{}
			wantError(t, post(newHandler(f), tc.body), http.StatusBadRequest, "invalid", tc.mention...)
			if len(f.calls()) != 0 {
				t.Error("the order service was called for an invalid request")
			}
		})
	}
}

func TestPurchasePrices(t *testing.T) {
	for price, cents := range map[string]int64{"68": 6800, "68.5": 6850, "68.05": 6805, "0.01": 1, "": 0} {
		f := &fakeOrders{}
		rec := post(newHandler(f), withField(t, "order", `{"price":"`+price+`"}`))
		if rec.Code != 201 || f.calls()[0].PriceCents != cents {
			t.Errorf("price %q: %d, sent %d cents, want %d", price, rec.Code, f.calls()[0].PriceCents, cents)
		}
	}
	f := &fakeOrders{}
	if rec := post(newHandler(f), withField(t, "order", "")); rec.Code != 201 || f.calls()[0].PriceCents != 0 {
		t.Errorf("no story order: %d, price %d", rec.Code, f.calls()[0].PriceCents)
	}
}

func TestPurchaseHTTPErrors(t *testing.T) {
	h := newHandler(&fakeOrders{})
	send := func(method, path, ct string, body io.Reader) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, body)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		rec := send(m, "/purchaseOrder", "application/json", strings.NewReader(validBody))
		wantError(t, rec, http.StatusMethodNotAllowed, "method_not_allowed", m, "POST")
		if rec.Header().Get("Allow") != "POST" {
			t.Errorf("%s: Allow %q, want POST", m, rec.Header().Get("Allow"))
		}
	}
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin1", "application/json;;"} {
		wantError(t, send("POST", "/purchaseOrder", ct, strings.NewReader(validBody)), http.StatusUnsupportedMediaType,
			"unsupported_media_type", "application/json")
	}
	for _, ct := range []string{"application/json", "Application/JSON; charset=UTF-8"} {
		if rec := send("POST", "/purchaseOrder", ct, strings.NewReader(validBody)); rec.Code/100 != 2 {
			t.Errorf("Content-Type %q: %d %s", ct, rec.Code, rec.Body)
		}
	}
	big := `{"sku":"flash-1","user":"` + strings.Repeat("a", maxBody) + `"}`
	wantError(t, send("POST", "/purchaseOrder", "application/json", strings.NewReader(big)), http.StatusRequestEntityTooLarge, "too_large", "65536")
	// Without a Content-Length the limit holds while reading.
	wantError(t, send("POST", "/purchaseOrder", "application/json", io.MultiReader(strings.NewReader(big))),
		http.StatusRequestEntityTooLarge, "too_large")
	// Just under the limit is read.
	padded := strings.Replace(validBody, `"className":"phone"`, `"className":"`+strings.Repeat("a", maxBody-len(validBody)-8)+`"`, 1)
	if rec := send("POST", "/purchaseOrder", "application/json", strings.NewReader(padded)); rec.Code/100 != 2 {
		t.Errorf("%d-byte body: %d %s", len(padded), rec.Code, rec.Body)
	}
	wantError(t, send("GET", "/nowhere", "", nil), http.StatusNotFound, "not_found", "/nowhere")
}

func TestReasonMapping(t *testing.T) {
	for _, tc := range []struct {
		err     error
		status  int
		code    string
		message string
	}{
		{api.Error(codes.InvalidArgument, api.ReasonInvalid, "quantity 0"), 400, "invalid", "quantity 0"},
		{api.Error(codes.NotFound, api.ReasonUnknownSKU, "no sku flash-9"), 404, "unknown_sku", "no sku flash-9"},
		{api.Error(codes.NotFound, api.ReasonUnknownCoupon, "no coupon X"), 404, "unknown_coupon", "no coupon X"},
		{api.Error(codes.FailedPrecondition, api.ReasonOutOfStock, "sku flash-1: 0 left, 1 asked"), 409, "out_of_stock", "sku flash-1: 0 left, 1 asked"},
		{api.Error(codes.FailedPrecondition, api.ReasonCouponExhausted, "SAVE5 used up"), 409, "coupon_exhausted", "SAVE5 used up"},
		{api.Error(codes.FailedPrecondition, api.ReasonCouponMinimum, "below 100.00"), 409, "coupon_minimum", "below 100.00"},
		{api.Error(codes.FailedPrecondition, api.ReasonPriceChanged, "now 69.00"), 409, "price_changed", "now 69.00"},
		{api.Error(codes.AlreadyExists, api.ReasonOrderMismatch, "o-1 was flash-2"), 422, "order_mismatch", api.OrderIDTaken("o-1")},
		{api.Error(codes.Aborted, api.ReasonContention, "lost 16 times"), 503, "contention", "lost 16 times"},
		{api.Error(codes.Unavailable, api.ReasonNoInstance, "no inventory instance"), 503, "unavailable", "no inventory instance"},
		{status.Error(codes.Unavailable, "connection refused"), 503, "unavailable", "order service: connection refused"},
		{status.Error(codes.DeadlineExceeded, "deadline"), 503, "unavailable", "order service: deadline"},
		{status.Error(codes.Internal, "db exploded"), 502, "bad_gateway", "order service: db exploded"},
		{errors.New("boom"), 502, "bad_gateway", "order service: boom"},
	} {
		t.Run(tc.code+" "+tc.message, func(t *testing.T) {
			f := &fakeOrders{create: func(context.Context, *api.CreateOrderRequest) (*api.OrderReply, error) { return nil, tc.err }}
			rec := post(newHandler(f), validBody)
			body := wantError(t, rec, tc.status, tc.code)
			if body.Error.Message != tc.message {
				t.Errorf("message %q, want %q", body.Error.Message, tc.message)
			}
			if ra := rec.Header().Get("Retry-After"); (ra == "1") != (tc.code == "contention") {
				t.Errorf("Retry-After %q for %s", ra, tc.code)
			}
		})
	}
}

func TestDeadline(t *testing.T) {
	for name, result := range map[string]func(context.Context) error{
		"grpc status":   func(ctx context.Context) error { return status.FromContextError(ctx.Err()).Err() },
		"context error": func(ctx context.Context) error { return ctx.Err() },
	} {
		t.Run(name, func(t *testing.T) {
			var left time.Duration
			f := &fakeOrders{create: func(ctx context.Context, _ *api.CreateOrderRequest) (*api.OrderReply, error) {
				d, _ := ctx.Deadline()
				left = time.Until(d)
				<-ctx.Done()
				return nil, result(ctx)
			}}
			h := Handler(Config{Region: "east", Instance: "east-ctl1", Orders: f, Timeout: 50 * time.Millisecond})
			start := time.Now()
			wantError(t, post(h, validBody), http.StatusServiceUnavailable, "unavailable", "order service")
			if left <= 0 || left > 50*time.Millisecond {
				t.Errorf("the RPC had %v left, want at most the 50ms timeout", left)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("answered after %v", took)
			}
		})
	}
	// Without a Timeout the default applies.
	f := &fakeOrders{create: func(ctx context.Context, in *api.CreateOrderRequest) (*api.OrderReply, error) {
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > defaultTimeout || time.Until(d) < defaultTimeout-time.Second {
			return nil, errors.New("no default deadline")
		}
		return &api.OrderReply{OrderId: in.OrderId}, nil
	}}
	if rec := post(newHandler(f), validBody); rec.Code != http.StatusCreated {
		t.Errorf("default timeout: %d %s", rec.Code, rec.Body)
	}
}

func TestHealthz(t *testing.T) {
	get := func(h http.Handler, method string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "/healthz", nil))
		return rec
	}
	rec := get(newHandler(&fakeOrders{}), http.MethodGet)
	if rec.Code != 200 || rec.Body.String() != "ok region=east instance=east-ctl1\n" {
		t.Errorf("healthy: %d %q", rec.Code, rec.Body)
	}
	if rec := get(newHandler(&fakeOrders{}), http.MethodHead); rec.Code != 200 {
		t.Errorf("HEAD: %d", rec.Code)
	}
	sick := Handler(Config{Region: "east", Instance: "east-ctl1", Orders: &fakeOrders{},
		Healthy: func() error { return errors.New("no order instance in the registry") }})
	rec = get(sick, http.MethodGet)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "no order instance in the registry") ||
		!strings.Contains(rec.Body.String(), "instance=east-ctl1") {
		t.Errorf("unhealthy: %d %q", rec.Code, rec.Body)
	}
	rec = get(sick, http.MethodPost)
	wantError(t, rec, http.StatusMethodNotAllowed, "method_not_allowed")
	if rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("Allow %q", rec.Header().Get("Allow"))
	}
}

func TestGetOrder(t *testing.T) {
	f := &fakeOrders{get: func(_ context.Context, in *api.GetOrderRequest) (*api.OrderReply, error) {
		if in.OrderId != "o-1" {
			return nil, status.Error(codes.NotFound, "no order "+in.OrderId)
		}
		return &api.OrderReply{OrderId: "o-1", Sku: "flash-1", PriceCents: 6800, TotalCents: 6800, Quantity: 1}, nil
	}}
	h := newHandler(f)
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	rec := get("/orders/o-1")
	var got OrderResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != 200 || err != nil || got.OrderID != "o-1" || got.Total != "68.00" {
		t.Errorf("GET /orders/o-1: %d %s", rec.Code, rec.Body)
	}
	wantError(t, get("/orders/o-2"), http.StatusNotFound, "not_found", "no order o-2")
	wantError(t, get("/orders/o%201"), http.StatusBadRequest, "invalid", "order id")
}

func TestLogsOneLinePerError(t *testing.T) {
	var buf bytes.Buffer
	h := Handler(Config{Region: "east", Instance: "east-ctl1", Orders: &fakeOrders{},
		Log: slog.New(slog.NewTextHandler(&buf, nil))})
	for range 3 {
		post(h, withField(t, "orderId", `"`+fmt.Sprint(time.Now().UnixNano())+`"`))
	}
	if buf.Len() != 0 {
		t.Errorf("successes logged: %s", buf.String())
	}
	post(h, withField(t, "sku", ""))
	if lines := strings.Count(buf.String(), "\n"); lines != 1 || !strings.Contains(buf.String(), "sku is required") {
		t.Errorf("one error logged as %d lines: %s", lines, buf.String())
	}
}

// startServe runs serve on a fresh loopback listener until the test ends.
func startServe(t *testing.T, proxyV2 bool, c Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, proxyV2, c) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(shutdownGrace + time.Second):
			t.Error("serve did not return after its context ended")
		}
	})
	return ln.Addr().String()
}

// client is an HTTP client whose connections start with a PROXY v2
// header naming src as the subscriber, unless src is nil.
func client(src *net.TCPAddr) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil || src == nil {
			return c, err
		}
		h := proxyproto.HeaderProxyFromAddrs(2, src, c.RemoteAddr())
		if _, err := h.WriteTo(c); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial}}
}

func postTo(c *http.Client, addr string) (*http.Response, error) {
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/purchaseOrder", strings.NewReader(validBody))
	req.Header.Set("Content-Type", "application/json")
	return c.Do(req)
}

func TestServeProxyV2(t *testing.T) {
	f := &fakeOrders{}
	var log syncBuffer
	addr := startServe(t, true, Config{Region: "east", Instance: "east-ctl1", Orders: f, Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	subscriber := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40123}
	resp, err := postTo(client(subscriber), addr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || !strings.Contains(string(body), `"client":"198.51.100.7:40123"`) {
		t.Errorf("through PROXY v2: %d %s", resp.StatusCode, body)
	}
	if calls := f.calls(); len(calls) != 1 || calls[0].ClientAddr != "198.51.100.7:40123" {
		t.Fatalf("order service saw %v, want client_addr 198.51.100.7:40123", calls)
	}

	if resp, err := postTo(client(nil), addr); err == nil {
		resp.Body.Close()
		t.Errorf("a request without a PROXY header was answered %d", resp.StatusCode)
	}
	if len(f.calls()) != 1 {
		t.Error("a request without a PROXY header reached the order service")
	}
	// From loopback (as here, and as the readiness probe) it is a debug line.
	if !strings.Contains(log.String(), `level=DEBUG msg="refused a connection without a PROXY header"`) {
		t.Errorf("the refusal was not logged: %s", log.String())
	}
}

// syncBuffer is a log destination for server goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestServePlain(t *testing.T) {
	f := &fakeOrders{}
	addr := startServe(t, false, Config{Orders: f})
	resp, err := postTo(client(nil), addr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if calls := f.calls(); resp.StatusCode != 201 || len(calls) != 1 || !strings.HasPrefix(calls[0].ClientAddr, "127.0.0.1:") {
		t.Errorf("plain: %d, order service saw %v", resp.StatusCode, calls)
	}
}

func TestServeErrors(t *testing.T) {
	ctx := context.Background()
	if err := Serve(ctx, "127.0.0.1:0", false, Config{}); err == nil || !strings.Contains(err.Error(), "order service") {
		t.Errorf("Serve without an order client: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := Serve(ctx, ln.Addr().String(), false, Config{Orders: &fakeOrders{}}); err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("Serve on a busy address: %v", err)
	}
}

func BenchmarkPurchase(b *testing.B) {
	h := Handler(Config{Region: "east", Instance: "east-ctl1", Orders: &fakeOrders{
		create: func(_ context.Context, in *api.CreateOrderRequest) (*api.OrderReply, error) {
			return &api.OrderReply{OrderId: in.OrderId, Sku: in.Sku, Quantity: in.Quantity, PriceCents: 6800, TotalCents: 6800}, nil
		}}})
	body := []byte(validBody)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/purchaseOrder", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusCreated {
				b.Fatalf("%d %s", rec.Code, rec.Body)
			}
		}
	})
}

// fakeInventory answers Product for one SKU; the order path never calls
// the controller's inventory client for anything else.
type fakeInventory struct {
	api.InventoryClient
	cache string
}

func (f *fakeInventory) Product(_ context.Context, in *api.ProductRequest, _ ...grpc.CallOption) (*api.ProductReply, error) {
	if in.Sku != "phone-x" {
		return nil, api.Error(codes.NotFound, api.ReasonUnknownSKU, "no product "+in.Sku)
	}
	return &api.ProductReply{Sku: "phone-x", Name: "Phone X", PriceCents: 6800, Stock: 7, Cache: f.cache, Instance: "east-app2"}, nil
}

func TestProducts(t *testing.T) {
	h := Handler(Config{Region: "east", Instance: "east-ctl1", Orders: &fakeOrders{}, Products: &fakeInventory{cache: "hit"}})
	get := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w
	}
	w := get("/products/phone-x")
	var p ProductResponse
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != 200 {
		t.Fatalf("GET /products/phone-x: %d %s %v", w.Code, w.Body, err)
	}
	if want := (ProductResponse{SKU: "phone-x", Name: "Phone X", Price: "68.00", Stock: 7, Cache: "hit", Instance: "east-app2"}); p != want {
		t.Errorf("product %+v, want %+v", p, want)
	}
	for path, want := range map[string]string{"/products/nope": "404 unknown_sku", "/products/Bad_SKU": "400 invalid"} {
		w := get(path)
		var e ErrorBody
		json.Unmarshal(w.Body.Bytes(), &e)
		if got := fmt.Sprint(w.Code, " ", e.Error.Code); got != want {
			t.Errorf("GET %s: %s (%s), want %s", path, got, w.Body, want)
		}
	}
	none := Handler(Config{Region: "east", Instance: "east-ctl1", Orders: &fakeOrders{}})
	w = httptest.NewRecorder()
	none.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/products/phone-x", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("without an inventory client: %d, want 404", w.Code)
	}
}
