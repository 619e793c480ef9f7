package svc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"labctl/lab/serve"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"labctl/lab/shop/api"
	"labctl/lab/shop/store"
)

// fakeInventory is an in-memory InventoryStore with the database's
// semantics: one deduction per order id, stock never below zero.
type fakeInventory struct {
	mu       sync.Mutex
	products map[string]store.Product
	reserved map[string]reservation // by order id
	fail     error                  // when set, Deduct returns it
	reads    int                    // Product calls
	releases int                    // Release calls that gave stock back
}

type reservation struct {
	sku string
	qty int32
}

func newFakeInventory(products ...store.Product) *fakeInventory {
	f := &fakeInventory{products: map[string]store.Product{}, reserved: map[string]reservation{}}
	for _, p := range products {
		f.products[p.SKU] = p
	}
	return f
}

func (f *fakeInventory) Product(ctx context.Context, sku string) (store.Product, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	p, ok := f.products[sku]
	if !ok {
		return store.Product{}, fmt.Errorf("product %s: %w", sku, store.ErrUnknownSKU)
	}
	return p, nil
}

func (f *fakeInventory) Deduct(ctx context.Context, orderID, sku string, qty int32) (store.Deduction, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return store.Deduction{}, f.fail
	}
	p, ok := f.products[sku]
	if !ok {
		return store.Deduction{}, fmt.Errorf("deduct %s: %w", sku, store.ErrUnknownSKU)
	}
	if r, ok := f.reserved[orderID]; ok {
		if r != (reservation{sku, qty}) {
			return store.Deduction{}, fmt.Errorf("order %s: %w", orderID, store.ErrOrderMismatch)
		}
		return store.Deduction{StockLeft: p.Stock, Version: p.Version, PriceCents: p.PriceCents, Attempts: 1, Replayed: true}, nil
	}
	if p.Stock < int64(qty) {
		return store.Deduction{}, fmt.Errorf("sku %s: %d left, %d asked: %w", sku, p.Stock, qty, store.ErrOutOfStock)
	}
	p.Stock -= int64(qty)
	p.Version++
	f.products[sku] = p
	f.reserved[orderID] = reservation{sku, qty}
	return store.Deduction{StockLeft: p.Stock, Version: p.Version, PriceCents: p.PriceCents, Attempts: 1}, nil
}

func (f *fakeInventory) Release(ctx context.Context, orderID string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.reserved[orderID]
	if !ok {
		return false, nil
	}
	p := f.products[r.sku]
	p.Stock += int64(r.qty)
	p.Version++
	f.products[r.sku] = p
	delete(f.reserved, orderID)
	f.releases++
	return true, nil
}

func (f *fakeInventory) stock(sku string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.products[sku].Stock
}

func (f *fakeInventory) released() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.releases
}

// fakeCoupons is an in-memory CouponStore: one use per order id.
type fakeCoupons struct {
	mu      sync.Mutex
	coupons map[string]*fakeCoupon
	uses    map[string]int64 // discount by order id
}

type fakeCoupon struct{ discount, minTotal, remaining int64 }

func newFakeCoupons() *fakeCoupons {
	return &fakeCoupons{coupons: map[string]*fakeCoupon{}, uses: map[string]int64{}}
}

func (f *fakeCoupons) Redeem(ctx context.Context, orderID, code, user string, total int64) (store.Redemption, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.uses[orderID]; ok {
		return store.Redemption{DiscountCents: d, Replayed: true}, nil
	}
	c, ok := f.coupons[code]
	switch {
	case !ok:
		return store.Redemption{}, fmt.Errorf("coupon %s: %w", code, store.ErrUnknownCoupon)
	case total < c.minTotal:
		return store.Redemption{}, fmt.Errorf("coupon %s: %w: total %d below %d", code, store.ErrCouponMinimum, total, c.minTotal)
	case c.remaining == 0:
		return store.Redemption{}, fmt.Errorf("coupon %s: %w", code, store.ErrCouponExhausted)
	}
	c.remaining--
	f.uses[orderID] = c.discount
	return store.Redemption{DiscountCents: c.discount}, nil
}

func (f *fakeCoupons) remaining(code string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.coupons[code].remaining
}

func (f *fakeCoupons) used() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.uses)
}

// fakeOrders is an in-memory OrderStore.
type fakeOrders struct {
	mu     sync.Mutex
	orders map[string]store.Order
}

func (f *fakeOrders) InsertOrder(ctx context.Context, o store.Order) (store.Order, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.orders[o.ID]; ok {
		return old, false, nil
	}
	o.Created = time.Now()
	f.orders[o.ID] = o
	return o, true, nil
}

func (f *fakeOrders) GetOrder(ctx context.Context, id string) (store.Order, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orders[id]
	if !ok {
		return store.Order{}, fmt.Errorf("order %s: %w", id, store.ErrNoOrder)
	}
	return o, nil
}

func (f *fakeOrders) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.orders)
}

// fakeCache is an in-memory ProductCache.
type fakeCache struct {
	mu       sync.Mutex
	products map[string]store.Product
}

func (c *fakeCache) Get(ctx context.Context, sku string) (store.Product, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.products[sku]
	return p, ok
}

func (c *fakeCache) Set(ctx context.Context, p store.Product) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.products[p.SKU] = p
}

func testLog(t testing.TB) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

// startServer serves register's servers on a free 127.0.0.1 port until
// the test ends, and returns the address.
func startServer(t testing.TB, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, lis, register, testLog(t)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// deadAddr is a 127.0.0.1 address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// shop is the three services over fakes, each on its own gRPC server.
type shop struct {
	inv     *fakeInventory
	coupons *fakeCoupons
	orders  *fakeOrders
	order   api.OrderClient
}

const flash = "flash-1"

// startShop starts the shop with product flash-1 (stock, 1999 cents),
// coupon SAVE5 (500 off orders from 1000, remaining 100) and coupon LAST
// (no uses left). invAddr and cpnAddr replace the inventory and coupon
// servers' addresses when not "".
func startShop(t testing.TB, stock int64, invAddr, cpnAddr string) *shop {
	t.Helper()
	s := &shop{
		inv:     newFakeInventory(store.Product{SKU: flash, Name: "Flash deal", PriceCents: 1999, Stock: stock, Version: 1}),
		coupons: newFakeCoupons(),
		orders:  &fakeOrders{orders: map[string]store.Order{}},
	}
	s.coupons.coupons["SAVE5"] = &fakeCoupon{discount: 500, minTotal: 1000, remaining: 100}
	s.coupons.coupons["LAST"] = &fakeCoupon{discount: 100}
	log := testLog(t)
	if invAddr == "" {
		invAddr = startServer(t, func(g *grpc.Server) {
			api.RegisterInventoryServer(g, NewInventory(s.inv, nil, "inv-1", log))
		})
	}
	if cpnAddr == "" {
		cpnAddr = startServer(t, func(g *grpc.Server) {
			api.RegisterCouponServer(g, NewCoupon(s.coupons, "cpn-1", log))
		})
	}
	inv := api.NewInventoryClient(dial(t, invAddr))
	cpn := api.NewCouponClient(dial(t, cpnAddr))
	orderAddr := startServer(t, func(g *grpc.Server) {
		api.RegisterOrderServer(g, NewOrder(s.orders, inv, cpn, "order-1", log))
	})
	s.order = api.NewOrderClient(dial(t, orderAddr))
	return s
}

func createReq(id string, qty int32) *api.CreateOrderRequest {
	return &api.CreateOrderRequest{OrderId: id, User: "alice", Sku: flash, Quantity: qty,
		Region: "east", Controller: "east-ctl1", ClientAddr: "198.51.100.7:40000"}
}

// wantError fails unless err has code c and reason.
func wantError(t *testing.T, err error, c codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != c || api.Reason(err) != reason {
		t.Fatalf("error %v: want code %v reason %q, got %v %q", err, c, reason, status.Code(err), api.Reason(err))
	}
}

func TestCreateHappyPath(t *testing.T) {
	s := startShop(t, 10, "", "")
	req := createReq("o-1", 2)
	req.Coupon = "SAVE5"
	req.PriceCents = 1999
	got, err := s.order.Create(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := &api.OrderReply{OrderId: "o-1", User: "alice", Sku: flash, Quantity: 2, PriceCents: 1999,
		DiscountCents: 500, TotalCents: 2*1999 - 500, Coupon: "SAVE5", Region: "east", Controller: "east-ctl1",
		OrderInstance: "order-1", InventoryInstance: "inv-1", StockLeft: 8, CasAttempts: 1,
		ClientAddr: "198.51.100.7:40000", Created: got.Created}
	if got.String() != want.String() {
		t.Errorf("reply\n got %v\nwant %v", got, want)
	}
	if _, err := time.Parse(time.RFC3339, got.Created); err != nil {
		t.Errorf("created %q: %v", got.Created, err)
	}
	if n := s.inv.stock(flash); n != 8 {
		t.Errorf("stock %d, want 8", n)
	}
	if n := s.coupons.remaining("SAVE5"); n != 99 {
		t.Errorf("coupon remaining %d, want 99", n)
	}
	stored, err := s.order.Get(t.Context(), &api.GetOrderRequest{OrderId: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	if stored.String() != got.String() {
		t.Errorf("Get\n got %v\nwant %v", stored, got)
	}
	_, err = s.order.Get(t.Context(), &api.GetOrderRequest{OrderId: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Get of an unknown order: %v, want NotFound", err)
	}
}

func TestCreateReplay(t *testing.T) {
	s := startShop(t, 10, "", "")
	req := createReq("o-1", 3)
	req.Coupon = "SAVE5"
	first, err := s.order.Create(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.order.Create(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Replayed || !again.Replayed {
		t.Errorf("replayed: first %v, again %v; want false, true", first.Replayed, again.Replayed)
	}
	again.Replayed = false
	if again.String() != first.String() {
		t.Errorf("replay\n got %v\nwant %v", again, first)
	}
	if n := s.inv.stock(flash); n != 7 {
		t.Errorf("stock %d after a replayed order of 3, want 7", n)
	}
	if n := s.coupons.used(); n != 1 {
		t.Errorf("coupon used %d times, want 1", n)
	}
}

func TestCreateMismatch(t *testing.T) {
	s := startShop(t, 10, "", "")
	if _, err := s.order.Create(t.Context(), createReq("o-1", 1)); err != nil {
		t.Fatal(err)
	}
	_, err := s.order.Create(t.Context(), createReq("o-1", 2))
	wantError(t, err, codes.AlreadyExists, api.ReasonOrderMismatch)
	// The same id with a coupon, or with another price than it was
	// ordered at, is another order too.
	withCoupon := createReq("o-1", 1)
	withCoupon.Coupon = "D11-10"
	_, err = s.order.Create(t.Context(), withCoupon)
	wantError(t, err, codes.AlreadyExists, api.ReasonOrderMismatch)
	otherPrice := createReq("o-1", 1)
	otherPrice.PriceCents = 1
	_, err = s.order.Create(t.Context(), otherPrice)
	wantError(t, err, codes.AlreadyExists, api.ReasonOrderMismatch)
	if n := s.inv.stock(flash); n != 9 {
		t.Errorf("stock %d, want 9", n)
	}
}

func TestCreateConcurrentDuplicates(t *testing.T) {
	s := startShop(t, 10, "", "")
	const n = 20
	replies := make(chan *api.OrderReply, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			r, err := s.order.Create(t.Context(), createReq("o-dup", 1))
			if err != nil {
				t.Error(err)
				return
			}
			replies <- r
		})
	}
	wg.Wait()
	close(replies)
	fresh := 0
	for r := range replies {
		if !r.Replayed {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d of %d duplicates created the order, want 1", fresh, n)
	}
	if got := s.inv.stock(flash); got != 9 {
		t.Errorf("stock %d after %d duplicates of one order, want 9", got, n)
	}
}

func TestCreateOutOfStockThroughTwoHops(t *testing.T) {
	s := startShop(t, 1, "", "")
	_, err := s.order.Create(t.Context(), createReq("o-1", 2))
	wantError(t, err, codes.FailedPrecondition, api.ReasonOutOfStock)
	if msg := status.Convert(err).Message(); msg != "sku flash-1: 1 left, 2 asked: out of stock" {
		t.Errorf("message %q lost the store's detail", msg)
	}
	if s.orders.count() != 0 {
		t.Error("an order was stored")
	}
}

func TestCreateInventoryErrors(t *testing.T) {
	for _, tc := range []struct {
		fail   error
		code   codes.Code
		reason string
	}{
		{fmt.Errorf("deduct: %w after 16 attempts", store.ErrContention), codes.Aborted, api.ReasonContention},
		{errors.New("connection refused"), codes.Internal, ""},
	} {
		s := startShop(t, 10, "", "")
		s.inv.mu.Lock()
		s.inv.fail = tc.fail
		s.inv.mu.Unlock()
		_, err := s.order.Create(t.Context(), createReq("o-1", 1))
		wantError(t, err, tc.code, tc.reason)
		if tc.code == codes.Internal && status.Convert(err).Message() != "inventory: connection refused" {
			t.Errorf("message %q", status.Convert(err).Message())
		}
	}
}

func TestCreatePriceChangedReleases(t *testing.T) {
	s := startShop(t, 10, "", "")
	req := createReq("o-1", 1)
	req.PriceCents = 1500
	_, err := s.order.Create(t.Context(), req)
	wantError(t, err, codes.FailedPrecondition, api.ReasonPriceChanged)
	if s.inv.stock(flash) != 10 || s.inv.released() != 1 {
		t.Errorf("stock %d, releases %d: want the deduction released", s.inv.stock(flash), s.inv.released())
	}
	if s.orders.count() != 0 {
		t.Error("an order was stored")
	}
}

func TestCreateCouponFailureReleases(t *testing.T) {
	for _, tc := range []struct {
		coupon string
		code   codes.Code
		reason string
	}{
		{"NOPE", codes.NotFound, api.ReasonUnknownCoupon},
		{"LAST", codes.FailedPrecondition, api.ReasonCouponExhausted},
		{"SAVE5", codes.FailedPrecondition, api.ReasonCouponMinimum}, // 1999 cents, below 5000
	} {
		t.Run(tc.coupon, func(t *testing.T) {
			s := startShop(t, 10, "", "")
			s.coupons.mu.Lock()
			s.coupons.coupons["SAVE5"].minTotal = 5000
			s.coupons.mu.Unlock()
			req := createReq("o-1", 1)
			req.Coupon = tc.coupon
			_, err := s.order.Create(t.Context(), req)
			wantError(t, err, tc.code, tc.reason)
			if s.inv.stock(flash) != 10 || s.inv.released() != 1 {
				t.Errorf("stock %d, releases %d: want the deduction released", s.inv.stock(flash), s.inv.released())
			}
			if s.orders.count() != 0 {
				t.Error("an order was stored")
			}
		})
	}
}

func TestCreateConcurrentOnScarceStock(t *testing.T) {
	s := startShop(t, 10, "", "")
	const n = 50
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := s.order.Create(t.Context(), createReq("o-"+strconv.Itoa(i), 1))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	ok, out := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case api.Reason(err) == api.ReasonOutOfStock && status.Code(err) == codes.FailedPrecondition:
			out++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 10 || out != 40 {
		t.Errorf("%d created, %d out of stock; want 10, 40", ok, out)
	}
	if s.inv.stock(flash) != 0 || s.orders.count() != 10 {
		t.Errorf("stock %d, orders %d; want 0, 10", s.inv.stock(flash), s.orders.count())
	}
}

func TestCreateServiceDown(t *testing.T) {
	s := startShop(t, 10, deadAddr(t), "")
	_, err := s.order.Create(t.Context(), createReq("o-1", 1))
	wantError(t, err, codes.Unavailable, api.ReasonNoInstance)
	if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, "inventory unavailable: ") {
		t.Errorf("message %q", msg)
	}

	s = startShop(t, 10, "", deadAddr(t))
	req := createReq("o-1", 1)
	req.Coupon = "SAVE5"
	_, err = s.order.Create(t.Context(), req)
	wantError(t, err, codes.Unavailable, api.ReasonNoInstance)
	if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, "coupon unavailable: ") {
		t.Errorf("message %q", msg)
	}
	if s.inv.stock(flash) != 10 || s.inv.released() != 1 {
		t.Errorf("stock %d, releases %d: want the deduction released", s.inv.stock(flash), s.inv.released())
	}
}

func TestCreateInvalid(t *testing.T) {
	s := startShop(t, 10, "", "")
	long := strings.Repeat("x", MaxIDLen+1)
	for name, edit := range map[string]func(*api.CreateOrderRequest){
		"no order id":    func(r *api.CreateOrderRequest) { r.OrderId = "" },
		"long order id":  func(r *api.CreateOrderRequest) { r.OrderId = long },
		"no user":        func(r *api.CreateOrderRequest) { r.User = "" },
		"no sku":         func(r *api.CreateOrderRequest) { r.Sku = "" },
		"quantity 0":     func(r *api.CreateOrderRequest) { r.Quantity = 0 },
		"quantity 101":   func(r *api.CreateOrderRequest) { r.Quantity = MaxQuantity + 1 },
		"long coupon":    func(r *api.CreateOrderRequest) { r.Coupon = long },
		"negative price": func(r *api.CreateOrderRequest) { r.PriceCents = -1 },
	} {
		req := createReq("o-1", 1)
		edit(req)
		_, err := s.order.Create(t.Context(), req)
		if status.Code(err) != codes.InvalidArgument || api.Reason(err) != api.ReasonInvalid {
			t.Errorf("%s: %v, want InvalidArgument/INVALID", name, err)
		}
	}
	if s.inv.stock(flash) != 10 {
		t.Error("an invalid order deducted stock")
	}
}

func TestProductCache(t *testing.T) {
	inv := newFakeInventory(store.Product{SKU: flash, Name: "Flash deal", PriceCents: 1999, Stock: 10, Version: 1})
	cache := &fakeCache{products: map[string]store.Product{}}
	addr := startServer(t, func(g *grpc.Server) {
		api.RegisterInventoryServer(g, NewInventory(inv, cache, "inv-1", testLog(t)))
	})
	c := api.NewInventoryClient(dial(t, addr))
	for i, want := range []string{CacheMiss, CacheHit} {
		r, err := c.Product(t.Context(), &api.ProductRequest{Sku: flash})
		if err != nil {
			t.Fatal(err)
		}
		if r.Cache != want || r.Name != "Flash deal" || r.PriceCents != 1999 || r.Stock != 10 || r.Instance != "inv-1" {
			t.Errorf("call %d: %v, want cache %s", i, r, want)
		}
	}
	inv.mu.Lock()
	reads := inv.reads
	inv.mu.Unlock()
	if reads != 1 {
		t.Errorf("%d database reads, want 1", reads)
	}
	_, err := c.Product(t.Context(), &api.ProductRequest{Sku: "nope"})
	wantError(t, err, codes.NotFound, api.ReasonUnknownSKU)
	if _, ok := cache.Get(t.Context(), "nope"); ok {
		t.Error("an unknown SKU was cached")
	}
	_, err = c.Deduct(t.Context(), &api.DeductRequest{OrderId: "o-1", Sku: flash, Quantity: MaxQuantity + 1})
	wantError(t, err, codes.InvalidArgument, api.ReasonInvalid)
}

// startRedis runs redis-server on a free 127.0.0.1 port until the test
// ends and returns its address.
func startRedis(t *testing.T) string {
	t.Helper()
	bin := serve.RedisBin
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v", bin, err)
		}
		t.Skipf("%s: %v", bin, err)
	}
	addr := deadAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	for deadline := time.Now().Add(5 * time.Second); client.Ping(t.Context()).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not answer", addr)
		}
	}
	return addr
}

func TestRedisCache(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: startRedis(t)})
	defer client.Close()
	ctx := t.Context()
	c := NewRedisCache(client, time.Minute, testLog(t))
	if _, ok := c.Get(ctx, flash); ok {
		t.Fatal("hit in an empty cache")
	}
	p := store.Product{SKU: flash, Name: "Flash deal", PriceCents: 1999, Stock: 10, Version: 3}
	c.Set(ctx, p)
	if got, ok := c.Get(ctx, flash); !ok || got != p {
		t.Errorf("Get = %+v, %v; want %+v", got, ok, p)
	}
	if ttl := client.PTTL(ctx, "product:"+flash).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("TTL %v, want up to a minute", ttl)
	}
	client.Set(ctx, "product:bad", "{not json", 0)
	if _, ok := c.Get(ctx, "bad"); ok {
		t.Error("an unreadable entry was a hit")
	}
}

func TestRedisCacheDownIsAMiss(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: deadAddr(t), MaxRetries: -1})
	defer client.Close()
	var buf bytes.Buffer
	c := NewRedisCache(client, time.Minute, slog.New(slog.NewTextHandler(&buf, nil)))
	for range 3 {
		if _, ok := c.Get(t.Context(), flash); ok {
			t.Fatal("hit with Redis down")
		}
		c.Set(t.Context(), store.Product{SKU: flash})
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Errorf("%d log lines for 6 errors in a minute, want 1:\n%s", n, buf.String())
	}
}

func TestErrorLogThrottles(t *testing.T) {
	var buf bytes.Buffer
	l := newErrorLog(slog.New(slog.NewTextHandler(&buf, nil)), 50*time.Millisecond)
	for range 3 {
		l.Error("boom")
	}
	time.Sleep(60 * time.Millisecond)
	l.Error("boom")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || strings.Contains(lines[0], "dropped") || !strings.Contains(lines[1], "dropped=2") {
		t.Errorf("log:\n%s\nwant two lines, the second with dropped=2", buf.String())
	}
}

func TestServeHealthAndStop(t *testing.T) {
	addr := deadAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, addr, func(g *grpc.Server) {
			api.RegisterCouponServer(g, NewCoupon(newFakeCoupons(), "cpn-1", testLog(t)))
		}, testLog(t))
	}()
	h := healthpb.NewHealthClient(dial(t, addr))
	for _, service := range []string{"", "labctl.shop.v1.Coupon"} {
		var r *healthpb.HealthCheckResponse
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if r, err = h.Check(ctx, &healthpb.HealthCheckRequest{Service: service}); err == nil {
				break
			}
		}
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v, %v; want SERVING", service, r, err)
		}
	}
	if err := Serve(ctx, addr, func(*grpc.Server) {}, testLog(t)); err == nil {
		t.Error("a second Serve on a busy address succeeded")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

// BenchmarkCreate measures orders through the three servers over real
// gRPC with the stores in memory: the services' own cost per order.
func BenchmarkCreate(b *testing.B) {
	s := startShop(b, int64(b.N), "", "")
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := createReq("o-"+strconv.FormatInt(next.Add(1), 10), 1)
			if _, err := s.order.Create(b.Context(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
