// Package controller is the shop's controller tier (stage 9 of
// docs/double11-story.md): it takes the subscriber's HTTP POST /purchaseOrder
// from HAProxy (with the subscriber's address in a PROXY v2 header),
// validates it and calls the order service by gRPC, then answers with the
// order or with an error the client can act on.
package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pires/go-proxyproto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"labctl/lab/shop/api"
	"labctl/lab/shop/store"
)

const (
	defaultTimeout = 3 * time.Second
	maxBody        = 64 << 10 // bytes of a purchase order body
	maxUserRunes   = 64
	shutdownGrace  = 500 * time.Millisecond
	headerTimeout  = 5 * time.Second // for the PROXY header and then the HTTP one
)

// Config is what a controller needs.
type Config struct {
	Region, Instance string
	Orders           api.OrderClient // the order service, through the registry (wired by the caller)
	// Healthy reports whether the controller can take orders; nil means
	// always. A non-nil error makes /healthz answer 503 with its text
	// (e.g. "no order instance in the registry").
	Healthy func() error
	// Products is the inventory service of the region, for GET
	// /products/{sku} (product reads, through the AZ's cache); nil: 404.
	Products api.InventoryClient
	Timeout  time.Duration // per request RPC deadline, default 3s
	Log      *slog.Logger  // nil: discard
}

// OrderRequest is the body of POST /purchaseOrder.
type OrderRequest struct {
	Order    *StoryOrder `json:"order,omitempty"` // the story's body: {"date","className","Author","price"}
	SKU      string      `json:"sku"`
	Quantity int32       `json:"quantity"`
	User     string      `json:"user"`
	OrderID  string      `json:"orderId,omitempty"` // or the Idempotency-Key header
	Coupon   string      `json:"coupon,omitempty"`
}

// StoryOrder is the order object of the story's request. Only Price is
// used: when given, the order fails with price_changed unless it is the
// product's current price.
type StoryOrder struct {
	Date      string `json:"date,omitempty"`
	ClassName string `json:"className,omitempty"`
	Author    string `json:"Author,omitempty"`
	Price     string `json:"price,omitempty"` // e.g. "68" or "68.00"
}

// OrderResponse is an order as the controller returns it. Amounts are
// decimal strings with two decimals ("68.00").
type OrderResponse struct {
	OrderID           string `json:"orderId"`
	User              string `json:"user"`
	SKU               string `json:"sku"`
	Quantity          int32  `json:"quantity"`
	Price             string `json:"price"`
	Discount          string `json:"discount"`
	Total             string `json:"total"`
	Coupon            string `json:"coupon,omitempty"`
	Region            string `json:"region"`
	Controller        string `json:"controller"`
	OrderInstance     string `json:"orderInstance"`
	InventoryInstance string `json:"inventoryInstance"`
	Client            string `json:"client"`
	StockLeft         int64  `json:"stockLeft"`
	CASAttempts       int32  `json:"casAttempts"`
	Replayed          bool   `json:"replayed"`
	Created           string `json:"created"`
}

// ProductResponse is GET /products/{sku}: the product page's read, served
// by an inventory instance through its AZ's Redis.
type ProductResponse struct {
	SKU      string `json:"sku"`
	Name     string `json:"name"`
	Price    string `json:"price"`
	Stock    int64  `json:"stock"` // may be the cache's (up to its TTL old)
	Cache    string `json:"cache"` // hit or miss in the AZ's Redis
	Instance string `json:"inventoryInstance"`
}

// ErrorBody is every error answer:
// {"error":{"status":409,"code":"out_of_stock","message":"..."}}.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error says what went wrong: the HTTP status, a code to switch on, and
// a message for people.
type Error struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Body codes of errors the controller makes itself; the order service's
// reasons map to the others in rpcFailure.
const (
	codeInvalid          = "invalid"
	codeNotFound         = "not_found"
	codeMethod           = "method_not_allowed"
	codeMediaType        = "unsupported_media_type"
	codeTooLarge         = "too_large"
	codeUnavailable      = "unavailable"
	codeContention       = "contention"
	codeBadGateway       = "bad_gateway"
	idempotencyKeyHeader = "Idempotency-Key"
)

var (
	skuRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
	orderIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)
	couponRE  = regexp.MustCompile(`^[A-Z0-9-]{1,32}$`)
)

// Constant header values, shared by every response (net/http only reads
// them) so a request does not allocate them again.
var (
	jsonType = []string{"application/json"}
	textType = []string{"text/plain; charset=utf-8"}
	retryOne = []string{"1"}
)

// buffers hold request bodies and encoded answers between requests.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// failure is an error answer: HTTP status, body code and message.
type failure struct {
	status        int
	code, message string
}

func invalid(format string, args ...any) *failure {
	return &failure{http.StatusBadRequest, codeInvalid, fmt.Sprintf(format, args...)}
}

type handler struct {
	c                           Config
	mux                         *http.ServeMux
	region, instance            []string // header values
	healthyBody, unhealthyIntro string
}

// Handler serves POST /purchaseOrder, GET /orders/{id} and GET /healthz.
// Every answer carries X-Labctl-Region and X-Labctl-Controller.
func Handler(c Config) http.Handler {
	c = c.withDefaults()
	h := &handler{
		c:              c,
		mux:            http.NewServeMux(),
		region:         []string{c.Region},
		instance:       []string{c.Instance},
		healthyBody:    fmt.Sprintf("ok region=%s instance=%s\n", c.Region, c.Instance),
		unhealthyIntro: fmt.Sprintf("unavailable region=%s instance=%s: ", c.Region, c.Instance),
	}
	h.mux.HandleFunc("/purchaseOrder", h.only(http.MethodPost, h.purchase))
	h.mux.HandleFunc("/orders/{id}", h.only(http.MethodGet, h.order))
	h.mux.HandleFunc("/products/{sku}", h.only(http.MethodGet, h.product))
	h.mux.HandleFunc("/healthz", h.only(http.MethodGet, h.healthz))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, &failure{http.StatusNotFound, codeNotFound, "no such path " + r.URL.Path})
	})
	return h
}

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = defaultTimeout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr["X-Labctl-Region"] = h.region
	hdr["X-Labctl-Controller"] = h.instance
	h.mux.ServeHTTP(w, r)
}

// only refuses methods other than method (GET also admits HEAD) with 405.
func (h *handler) only(method string, next http.HandlerFunc) http.HandlerFunc {
	allow := []string{method}
	if method == http.MethodGet {
		allow = []string{"GET, HEAD"}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header()["Allow"] = allow
			h.fail(w, r, &failure{http.StatusMethodNotAllowed, codeMethod,
				fmt.Sprintf("method %s not allowed on %s: use %s", r.Method, r.URL.Path, allow[0])})
			return
		}
		next(w, r)
	}
}

// purchase is POST /purchaseOrder.
func (h *handler) purchase(w http.ResponseWriter, r *http.Request) {
	req, f := decodeOrder(w, r)
	if f != nil {
		h.fail(w, r, f)
		return
	}
	create, f := h.createRequest(req, r)
	if f != nil {
		h.fail(w, r, f)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.c.Timeout)
	reply, err := h.c.Orders.Create(ctx, create)
	cancel()
	if err != nil {
		if api.Reason(err) == api.ReasonOrderMismatch {
			// Whatever the service said, the stored order is not this
			// caller's to read.
			err = api.Error(codes.AlreadyExists, api.ReasonOrderMismatch, api.OrderIDTaken(create.OrderId))
		}
		h.failRPC(w, r, err)
		return
	}
	code := http.StatusOK // a replay of an earlier call
	if !reply.Replayed {
		code = http.StatusCreated
		w.Header().Set("Location", "/orders/"+reply.OrderId)
	}
	writeJSON(w, code, toResponse(reply))
}

// product is GET /products/{sku}.
func (h *handler) product(w http.ResponseWriter, r *http.Request) {
	sku := r.PathValue("sku")
	if h.c.Products == nil {
		h.fail(w, r, &failure{http.StatusNotFound, codeNotFound, "this controller serves no product reads"})
		return
	}
	if !skuRE.MatchString(sku) {
		h.fail(w, r, invalid("sku in the path must match %s", skuRE))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.c.Timeout)
	p, err := h.c.Products.Product(ctx, &api.ProductRequest{Sku: sku})
	cancel()
	if err != nil {
		h.failRPC(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ProductResponse{SKU: p.Sku, Name: p.Name, Price: store.FormatCents(p.PriceCents),
		Stock: p.Stock, Cache: p.Cache, Instance: p.Instance})
}

// order is GET /orders/{id}.
func (h *handler) order(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !orderIDRE.MatchString(id) {
		h.fail(w, r, invalid("order id in the path must be 1 to 64 of A-Z a-z 0-9 . _ : -"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.c.Timeout)
	reply, err := h.c.Orders.Get(ctx, &api.GetOrderRequest{OrderId: id})
	cancel()
	if err != nil {
		h.failRPC(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toResponse(reply))
}

// healthz is GET /healthz, for HAProxy's checks.
func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Type"] = textType
	if h.c.Healthy != nil {
		if err := h.c.Healthy(); err != nil {
			h.c.Log.Warn("unhealthy", "region", h.c.Region, "instance", h.c.Instance, "reason", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, h.unhealthyIntro+err.Error()+"\n")
			return
		}
	}
	io.WriteString(w, h.healthyBody)
}

// decodeOrder reads and strictly decodes the JSON body.
func decodeOrder(w http.ResponseWriter, r *http.Request) (*OrderRequest, *failure) {
	// Two headers are ambiguous: net/http's Get would read the first only.
	if cts := r.Header.Values("Content-Type"); len(cts) > 1 {
		return nil, &failure{http.StatusUnsupportedMediaType, codeMediaType,
			fmt.Sprintf("one Content-Type, application/json, not %d (%q)", len(cts), cts)}
	}
	if f := checkContentType(r.Header.Get("Content-Type")); f != nil {
		return nil, f
	}
	tooLarge := &failure{http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody)}
	if r.ContentLength > maxBody {
		return nil, tooLarge
	}
	buf := buffers.Get().(*bytes.Buffer)
	defer putBuffer(buf)
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxBody)); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge
		}
		return nil, invalid("reading the body: %v", err)
	}
	var req OrderRequest
	dec := json.NewDecoder(bytes.NewReader(buf.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, jsonFailure(err)
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("malformed JSON: data after the order object at byte %d", end)
	}
	if key := duplicateKey(buf.Bytes()); key != "" {
		return nil, invalid("duplicate key %q: send each field once", key)
	}
	return &req, nil
}

// duplicateKey is the path ("order.price") of the first key that repeats
// one before it in the same object of the valid JSON data, or "".
// encoding/json would keep the last; it also matches field names without
// regard to case, so keys are compared case-folded as it compares them.
func duplicateKey(data []byte) string {
	type object struct {
		path string
		seen map[string]bool
		key  bool // the next string is a key
	}
	var stack []*object
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	next := "" // the path of the value about to start
	for {
		tok, err := dec.Token()
		if err != nil {
			return "" // EOF, or invalid: Decode has said so already
		}
		var top *object
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.key {
			k := foldKey(s)
			next = s
			if top.path != "" {
				next = top.path + "." + s
			}
			if top.seen[k] {
				return next
			}
			top.seen[k] = true
			top.key = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &object{path: next, seen: map[string]bool{}, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, &object{path: next + "[]"})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: the enclosing object wants a key again.
		if len(stack) > 0 && stack[len(stack)-1].seen != nil {
			stack[len(stack)-1].key = true
		}
	}
}

// foldKey maps s to one spelling of its case-folding class, the classes
// bytes.EqualFold (and so encoding/json's field matching) uses.
func foldKey(s string) string {
	var b strings.Builder
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// checkContentType admits application/json, with any parameters but a
// charset other than UTF-8 (JSON is UTF-8).
func checkContentType(ct string) *failure {
	if ct == "application/json" {
		return nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && mt == "application/json" {
		if cs, ok := params["charset"]; !ok || strings.EqualFold(cs, "utf-8") {
			return nil
		}
	}
	return &failure{http.StatusUnsupportedMediaType, codeMediaType,
		fmt.Sprintf("Content-Type must be application/json (charset utf-8), not %q", ct)}
}

// jsonFailure explains a decoding error with where it happened.
func jsonFailure(err error) *failure {
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		return invalid("malformed JSON at byte %d: %v", e.Offset, e)
	}
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if e.Field == "" {
			return invalid("the body must be a JSON order object, not JSON %s", e.Value)
		}
		return invalid("field %s: JSON %s at byte %d is not a valid %v", e.Field, e.Value, e.Offset, e.Type)
	}
	switch {
	case errors.Is(err, io.EOF):
		return invalid("empty body: a JSON order object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("malformed JSON: the body ends inside the order object")
	}
	// What is left is encoding/json's unknown field error, which names it.
	return invalid("%s", strings.TrimPrefix(err.Error(), "json: "))
}

func putBuffer(b *bytes.Buffer) {
	b.Reset()
	buffers.Put(b)
}

// createRequest validates req, taking the order id from the body or the
// Idempotency-Key header, and builds the order service's request.
func (h *handler) createRequest(req *OrderRequest, r *http.Request) (*api.CreateOrderRequest, *failure) {
	id, f := orderID(req.OrderID, r.Header.Get(idempotencyKeyHeader))
	if f != nil {
		return nil, f
	}
	switch {
	case req.SKU == "":
		return nil, invalid("sku is required")
	case !skuRE.MatchString(req.SKU):
		return nil, invalid("sku must be 1 to 64 of a-z 0-9 - starting with a letter or digit")
	case req.Quantity < 1 || req.Quantity > api.MaxQuantity:
		return nil, invalid("quantity must be 1 to %d, got %d", api.MaxQuantity, req.Quantity)
	case req.User == "":
		return nil, invalid("user is required")
	case !printable(req.User, maxUserRunes) || len(req.User) > api.MaxIDLen:
		return nil, invalid("user must be 1 to %d printable characters (at most %d bytes)", maxUserRunes, api.MaxIDLen)
	case req.Coupon != "" && !couponRE.MatchString(req.Coupon):
		return nil, invalid("coupon must be 1 to 32 of A-Z 0-9 -")
	}
	var priceCents int64
	if req.Order != nil && req.Order.Price != "" {
		if priceCents, f = parsePrice(req.Order.Price); f != nil {
			return nil, f
		}
	}
	return &api.CreateOrderRequest{
		OrderId:    id,
		User:       req.User,
		Sku:        req.SKU,
		Quantity:   req.Quantity,
		Coupon:     req.Coupon,
		PriceCents: priceCents,
		Region:     h.c.Region,
		Controller: h.c.Instance,
		ClientAddr: r.RemoteAddr,
	}, nil
}

// orderID picks the order id from the body's orderId or the
// Idempotency-Key header: one is required, and both must agree.
func orderID(body, header string) (string, *failure) {
	switch {
	case body != "" && !orderIDRE.MatchString(body):
		return "", invalid("orderId must be 1 to 64 of A-Z a-z 0-9 . _ : -")
	case header != "" && !orderIDRE.MatchString(header):
		return "", invalid("Idempotency-Key must be 1 to 64 of A-Z a-z 0-9 . _ : -")
	case body == "" && header == "":
		return "", invalid("orderId or Idempotency-Key required: a retried POST must not order twice")
	case body != "" && header != "" && body != header:
		return "", invalid("orderId %q and Idempotency-Key %q differ: send one, or the same in both", body, header)
	case body == "":
		return header, nil
	}
	return body, nil
}

// printable tells whether s is valid UTF-8 of 1 to max printable runes.
func printable(s string, max int) bool {
	n := 0
	for _, c := range s {
		if c == utf8.RuneError || !unicode.IsPrint(c) {
			return false
		}
		n++
	}
	return n >= 1 && n <= max
}

// parsePrice turns a positive decimal amount with at most two decimals
// ("68", "68.5", "68.00") into cents.
func parsePrice(s string) (int64, *failure) {
	cents, err := store.ParseMoney(s)
	if err != nil {
		return 0, invalid(`order.price must be a decimal amount with at most 2 decimals, like "68.00"`)
	}
	if cents == 0 {
		return 0, invalid("order.price must be more than 0")
	}
	return cents, nil
}

// reasonFailures maps the order service's ErrorInfo reasons to answers.
var reasonFailures = map[string]struct {
	status int
	code   string
}{
	api.ReasonInvalid:         {http.StatusBadRequest, codeInvalid},
	api.ReasonUnknownSKU:      {http.StatusNotFound, "unknown_sku"},
	api.ReasonUnknownCoupon:   {http.StatusNotFound, "unknown_coupon"},
	api.ReasonOutOfStock:      {http.StatusConflict, "out_of_stock"},
	api.ReasonCouponExhausted: {http.StatusConflict, "coupon_exhausted"},
	api.ReasonCouponMinimum:   {http.StatusConflict, "coupon_minimum"},
	api.ReasonPriceChanged:    {http.StatusConflict, "price_changed"},
	api.ReasonOrderMismatch:   {http.StatusUnprocessableEntity, "order_mismatch"},
	api.ReasonContention:      {http.StatusServiceUnavailable, codeContention},
	api.ReasonNoInstance:      {http.StatusServiceUnavailable, codeUnavailable},
}

// rpcFailure maps an order service error to an answer. Only the status
// message reaches the client, never the Go error around it.
func rpcFailure(err error) *failure {
	st := status.Convert(err)
	if m, ok := reasonFailures[api.Reason(err)]; ok {
		return &failure{m.status, m.code, st.Message()}
	}
	switch {
	case st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
		return &failure{http.StatusServiceUnavailable, codeUnavailable, "order service: " + st.Message()}
	case st.Code() == codes.NotFound:
		return &failure{http.StatusNotFound, codeNotFound, st.Message()}
	}
	return &failure{http.StatusBadGateway, codeBadGateway, "order service: " + st.Message()}
}

// failRPC answers a failed order service call, unless the client has
// gone: then there is no one to answer.
func (h *handler) failRPC(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		h.c.Log.Info("client went away", "path", r.URL.Path, "client", r.RemoteAddr, "err", err)
		return
	}
	h.fail(w, r, rpcFailure(err))
}

// fail answers with f as an ErrorBody and logs one line: a warning for
// the server's or its dependencies' failures, info for the client's.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, f *failure) {
	level := slog.LevelInfo
	if f.status >= 500 {
		level = slog.LevelWarn
	}
	h.c.Log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path,
		"status", f.status, "code", f.code, "error", f.message, "client", r.RemoteAddr)
	if f.code == codeContention {
		w.Header()["Retry-After"] = retryOne
	}
	var body ErrorBody
	body.Error.Status, body.Error.Code, body.Error.Message = f.status, f.code, f.message
	writeJSON(w, f.status, &body)
}

// writeJSON answers with HTTP status code and v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	buf := buffers.Get().(*bytes.Buffer)
	defer putBuffer(buf)
	json.NewEncoder(buf).Encode(v) // plain structs of strings and numbers: cannot fail
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func toResponse(o *api.OrderReply) *OrderResponse {
	return &OrderResponse{
		OrderID:           o.OrderId,
		User:              o.User,
		SKU:               o.Sku,
		Quantity:          o.Quantity,
		Price:             store.FormatCents(o.PriceCents),
		Discount:          store.FormatCents(o.DiscountCents),
		Total:             store.FormatCents(o.TotalCents),
		Coupon:            o.Coupon,
		Region:            o.Region,
		Controller:        o.Controller,
		OrderInstance:     o.OrderInstance,
		InventoryInstance: o.InventoryInstance,
		Client:            o.ClientAddr,
		StockLeft:         o.StockLeft,
		CASAttempts:       o.CasAttempts,
		Replayed:          o.Replayed,
		Created:           o.Created,
	}
}

// Serve answers on addr until ctx ends, then shuts down gracefully
// (shutdownGrace). With proxyV2 every connection must start with HAProxy's PROXY v2
// header (one without is refused), so r.RemoteAddr is the subscriber's
// public address rather than the SLB's.
func Serve(ctx context.Context, addr string, proxyV2 bool, c Config) error {
	if c.Orders == nil {
		return errors.New("controller: no order service client")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	return serve(ctx, ln, proxyV2, c)
}

// serve is Serve on an open listener, which it closes.
func serve(ctx context.Context, ln net.Listener, proxyV2 bool, c Config) error {
	c = c.withDefaults()
	if proxyV2 {
		ln = proxyListener{Listener: ln, log: c.Log}
	}
	// Timeouts bound what idle or slow clients can hold; HAProxy keeps
	// its connections to the controllers open between requests.
	hs := &http.Server{
		Handler:           Handler(c),
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      c.Timeout + 10*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(c.Log.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	c.Log.Info("serving controller", "listen", ln.Addr().String(), "proxyV2", proxyV2, "region", c.Region, "instance", c.Instance)
	select {
	case err := <-done:
		return fmt.Errorf("controller: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close() // the grace is over: drop what is still open
	}
	<-done
	return nil
}

// proxyListener requires every connection to start with a PROXY header
// (HAProxy's send-proxy-v2), so RemoteAddr is the subscriber's address.
type proxyListener struct {
	net.Listener
	log *slog.Logger
}

func (l proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pc := proxyproto.NewConn(c, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(headerTimeout))
	return &proxyConn{Conn: pc, log: l.log}, nil
}

// proxyConn ends a connection that did not start with a valid PROXY
// header as if the peer had closed it: net/http would otherwise answer
// 400 to a client that is not the SLB.
type proxyConn struct {
	*proxyproto.Conn
	log     *slog.Logger
	refused sync.Once
}

func (c *proxyConn) Read(b []byte) (int, error) {
	if c.ProxyHeader() == nil { // under REQUIRE: missing, malformed or too slow
		c.refused.Do(func() {
			// From loopback it is the supervisor's readiness probe, which
			// connects and closes: not worth a warning.
			level, from := slog.LevelWarn, c.Raw().RemoteAddr()
			if a, ok := from.(*net.TCPAddr); ok && a.IP.IsLoopback() {
				level = slog.LevelDebug
			}
			c.log.Log(context.Background(), level, "refused a connection without a PROXY header", "client", from.String())
		})
		return 0, io.EOF
	}
	return c.Conn.Read(b)
}
