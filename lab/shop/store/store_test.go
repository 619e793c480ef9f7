package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var phone = Product{SKU: "phone-x", Name: "Phone X", PriceCents: 6800, Stock: 10}

func TestSetupSeedsOnceAndKeepsRows(t *testing.T) {
	c := Catalog{Products: []Product{phone}, Coupons: []Coupon{{Code: "D11-10", DiscountCents: 1000, MinTotalCents: 5000, Remaining: 3}}}
	s := newStore(t, c)
	ctx := context.Background()
	if _, err := s.Deduct(ctx, "o1", "phone-x", 4); err != nil {
		t.Fatal(err)
	}
	// Run again with other numbers and one more product: what exists stays.
	again := Catalog{
		Products: []Product{{SKU: "phone-x", Name: "Renamed", PriceCents: 1, Stock: 999}, {SKU: "case", Name: "Case", PriceCents: 990, Stock: 5}},
		Coupons:  []Coupon{{Code: "D11-10", DiscountCents: 1, MinTotalCents: 1, Remaining: 999}},
	}
	dsn := s.pool.Config().ConnConfig.ConnString()
	if err := Setup(ctx, dsn, again); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	got, err := s.Products(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Product{
		{SKU: "case", Name: "Case", PriceCents: 990, Stock: 5},
		{SKU: "phone-x", Name: "Phone X", PriceCents: 6800, Stock: 6, Version: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("products after the second Setup:\n got %+v\nwant %+v", got, want)
	}
	var cp Coupon
	if err := s.pool.QueryRow(ctx, "SELECT code, discount_cents, min_total_cents, remaining FROM coupons").
		Scan(&cp.Code, &cp.DiscountCents, &cp.MinTotalCents, &cp.Remaining); err != nil {
		t.Fatal(err)
	}
	if cp != c.Coupons[0] {
		t.Fatalf("coupon after the second Setup: %+v, want %+v", cp, c.Coupons[0])
	}
}

func TestSetupConcurrently(t *testing.T) {
	dsn := testDSN(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- Setup(context.Background(), dsn, Catalog{Products: []Product{phone}}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestOpenWaitsForTheSchema(t *testing.T) {
	dsn := testDSN(t)
	ctx := context.Background()
	go func() {
		time.Sleep(300 * time.Millisecond)
		Setup(ctx, dsn, Catalog{Products: []Product{phone}})
	}()
	start := time.Now()
	s, err := Open(ctx, dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("Open returned after %v, before the schema existed", waited)
	}
	if p, err := s.Product(ctx, "phone-x"); err != nil || p != phone {
		t.Fatalf("product: %+v, %v", p, err)
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := Open(short, testDSN(t), 2); err == nil || !strings.Contains(err.Error(), "table products does not exist yet") {
		t.Fatalf("Open of a database without schema: %v", err)
	}
}

func TestProduct(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{phone}})
	if p, err := s.Product(context.Background(), "phone-x"); err != nil || p != phone {
		t.Fatalf("got %+v, %v; want %+v", p, err, phone)
	}
	if _, err := s.Product(context.Background(), "nope"); !errors.Is(err, ErrUnknownSKU) {
		t.Fatalf("unknown sku: %v", err)
	}
}

func TestDeduct(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{phone, {SKU: "case", Name: "Case", PriceCents: 990, Stock: 5}}})
	ctx := context.Background()
	d, err := s.Deduct(ctx, "o1", "phone-x", 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Deduction{StockLeft: 7, Version: 1, PriceCents: 6800, Attempts: 1}); d != want {
		t.Fatalf("first deduction %+v, want %+v", d, want)
	}
	d, err = s.Deduct(ctx, "o1", "phone-x", 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Deduction{StockLeft: 7, Version: 1, PriceCents: 6800, Replayed: true}); d != want {
		t.Fatalf("replayed deduction %+v, want %+v", d, want)
	}
	for _, tc := range []struct {
		order, sku string
		qty        int32
		want       error
		msg        string
	}{
		{"o1", "phone-x", 2, ErrOrderMismatch, "order o1 reserved 3 of phone-x, not 2 of phone-x"},
		{"o1", "case", 3, ErrOrderMismatch, "not 3 of case"},
		{"o2", "nope", 1, ErrUnknownSKU, "sku nope"},
		{"o2", "phone-x", 8, ErrOutOfStock, "sku phone-x: 7 left, 8 asked"},
	} {
		_, err := s.Deduct(ctx, tc.order, tc.sku, tc.qty)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Deduct(%s, %s, %d) = %v, want %v saying %q", tc.order, tc.sku, tc.qty, err, tc.want, tc.msg)
		}
	}
	if _, err := s.Deduct(ctx, "o3", "phone-x", 0); err == nil {
		t.Error("quantity 0 deducted")
	}
	if p, _ := s.Product(ctx, "phone-x"); p.Stock != 7 || p.Version != 1 {
		t.Errorf("after one deduction and refusals: stock %d version %d, want 7 and 1", p.Stock, p.Version)
	}
	if _, n, _ := s.Counts(ctx); n != 1 {
		t.Errorf("%d reservations, want 1", n)
	}
}

// deductAll runs Deduct(order-i, sku, 1) for i < n on n goroutines and
// counts the outcomes by error (nil for success).
func deductAll(t *testing.T, s *Store, sku string, n int) map[error]int {
	t.Helper()
	var mu sync.Mutex
	outcomes := map[error]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := s.Deduct(context.Background(), fmt.Sprintf("order-%d", i), sku, 1)
			for _, known := range []error{ErrOutOfStock, ErrContention} {
				if errors.Is(err, known) {
					err = known
				}
			}
			mu.Lock()
			outcomes[err]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return outcomes
}

func TestDeductSellsExactlyTheStock(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{{SKU: "flash-1", Name: "Flash", PriceCents: 100, Stock: 10}}})
	got := deductAll(t, s, "flash-1", 50)
	if want := map[error]int{nil: 10, ErrOutOfStock: 40}; !reflect.DeepEqual(got, want) {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
	p, _ := s.Product(context.Background(), "flash-1")
	if p.Stock != 0 || p.Version != 10 {
		t.Fatalf("stock %d version %d, want 0 and 10", p.Stock, p.Version)
	}
}

func TestDeductContention(t *testing.T) {
	const stock = 1_000_000
	s := newStore(t, Catalog{Products: []Product{{SKU: "hot", Name: "Hot", PriceCents: 100, Stock: stock}}})
	s.MaxRetries = 1
	got := deductAll(t, s, "hot", 200)
	if got[ErrContention] == 0 || got[nil]+got[ErrContention] != 200 {
		t.Fatalf("outcomes %v: want only successes and some ErrContention", got)
	}
	p, _ := s.Product(context.Background(), "hot")
	orders, reservations, err := s.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := int64(got[nil]); p.Stock+n != stock || p.Version != n || reservations != n || orders != 0 {
		t.Fatalf("%d successes but stock %d, version %d, %d reservations", n, p.Stock, p.Version, reservations)
	}
}

func TestDeductSameOrderConcurrently(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{phone}})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fresh, replayed int
	for range 20 {
		wg.Go(func() {
			d, err := s.Deduct(context.Background(), "o1", "phone-x", 2)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Error(err)
			case d.Replayed:
				replayed++
			default:
				fresh++
			}
		})
	}
	wg.Wait()
	if fresh != 1 || replayed != 19 {
		t.Fatalf("%d fresh and %d replayed deductions, want 1 and 19", fresh, replayed)
	}
	if p, _ := s.Product(context.Background(), "phone-x"); p.Stock != 8 {
		t.Fatalf("stock %d, want 8", p.Stock)
	}
}

func TestRelease(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{phone}})
	ctx := context.Background()
	if _, err := s.Deduct(ctx, "o1", "phone-x", 4); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Release(ctx, "o1"); !ok || err != nil {
		t.Fatalf("release: %v, %v", ok, err)
	}
	if p, _ := s.Product(ctx, "phone-x"); p.Stock != 10 || p.Version != 2 {
		t.Fatalf("after release: stock %d version %d, want 10 and 2", p.Stock, p.Version)
	}
	if ok, err := s.Release(ctx, "o1"); ok || err != nil {
		t.Fatalf("second release: %v, %v; want false, nil", ok, err)
	}
	if p, _ := s.Product(ctx, "phone-x"); p.Stock != 10 {
		t.Fatalf("second release changed the stock to %d", p.Stock)
	}
	// The order's id is free again.
	if d, err := s.Deduct(ctx, "o1", "phone-x", 1); err != nil || d.Replayed || d.StockLeft != 9 {
		t.Fatalf("deduct after release: %+v, %v", d, err)
	}
}

func TestRedeem(t *testing.T) {
	s := newStore(t, Catalog{Coupons: []Coupon{
		{Code: "D11-10", DiscountCents: 1000, MinTotalCents: 5000, Remaining: 2},
		{Code: "OTHER", DiscountCents: 500, MinTotalCents: 0, Remaining: 5},
	}})
	ctx := context.Background()
	for _, tc := range []struct {
		order, code, user string
		total             int64
		want              Redemption
		err               error
		msg               string
	}{
		{"o1", "D11-10", "ann", 4999, Redemption{}, ErrCouponMinimum, "coupon D11-10 needs a total of 50.00, order o1 has 49.99"},
		{"o1", "D11-10", "ann", 6800, Redemption{DiscountCents: 1000}, nil, ""},
		{"o1", "D11-10", "ann", 6800, Redemption{DiscountCents: 1000, Replayed: true}, nil, ""},
		{"o1", "OTHER", "ann", 6800, Redemption{}, ErrOrderMismatch, "order o1 used coupon D11-10 for user ann"},
		{"o1", "D11-10", "bob", 6800, Redemption{}, ErrOrderMismatch, "not D11-10 for bob"},
		{"o2", "NOPE", "bob", 6800, Redemption{}, ErrUnknownCoupon, "coupon NOPE"},
		{"o2", "D11-10", "bob", 6800, Redemption{DiscountCents: 1000}, nil, ""},
		{"o3", "D11-10", "cid", 6800, Redemption{}, ErrCouponExhausted, "coupon D11-10: no uses left"},
	} {
		r, err := s.Redeem(ctx, tc.order, tc.code, tc.user, tc.total)
		if r != tc.want || !errors.Is(err, tc.err) || tc.err != nil && !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Redeem(%s, %s, %s, %d) = %+v, %v; want %+v, %v saying %q",
				tc.order, tc.code, tc.user, tc.total, r, err, tc.want, tc.err, tc.msg)
		}
	}
	var remaining int64
	if err := s.pool.QueryRow(ctx, "SELECT remaining FROM coupons WHERE code = 'D11-10'").Scan(&remaining); err != nil || remaining != 0 {
		t.Fatalf("remaining %d, %v; want 0", remaining, err)
	}
}

func TestRedeemConcurrently(t *testing.T) {
	s := newStore(t, Catalog{Coupons: []Coupon{{Code: "FLASH", DiscountCents: 100, Remaining: 5}}})
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[error]int{}
	for i := range 30 {
		wg.Go(func() {
			// Two calls per order: one may replay the other.
			_, err := s.Redeem(context.Background(), fmt.Sprintf("o%d", i/2), "FLASH", "ann", 1000)
			if errors.Is(err, ErrCouponExhausted) {
				err = ErrCouponExhausted
			}
			mu.Lock()
			outcomes[err]++
			mu.Unlock()
		})
	}
	wg.Wait()
	var uses int64
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM coupon_uses").Scan(&uses); err != nil {
		t.Fatal(err)
	}
	if uses != 5 || outcomes[nil]+outcomes[ErrCouponExhausted] != 30 || outcomes[nil] < 5 {
		t.Fatalf("%d uses, outcomes %v: want 5 uses, only successes and ErrCouponExhausted", uses, outcomes)
	}
}

func TestOrders(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{phone}})
	ctx := context.Background()
	o := Order{
		ID: "o1", User: "ann", SKU: "phone-x", Quantity: 1, PriceCents: 6800, DiscountCents: 1000, TotalCents: 5800,
		Coupon: "D11-10", Region: "east", Controller: "east-web1", OrderInstance: "east-app1",
		InventoryInstance: "east-app2", ClientAddr: "198.51.100.7:40000", StockLeft: 9, CASAttempts: 2,
	}
	if _, _, err := s.InsertOrder(ctx, o); !errors.Is(err, ErrNoDeduction) {
		t.Fatalf("an order without a deduction: %v, want ErrNoDeduction", err)
	}
	for _, id := range []string{"o1", "o2", "o3"} {
		if _, err := s.Deduct(ctx, id, "phone-x", 1); err != nil {
			t.Fatal(err)
		}
	}
	stored, created, err := s.InsertOrder(ctx, o)
	if err != nil || !created {
		t.Fatalf("first insert: created %v, %v", created, err)
	}
	// Its deduction can no longer be given back.
	if released, err := s.Release(ctx, "o1"); released || err != nil {
		t.Fatalf("release of a stored order's deduction: %v %v, want false nil", released, err)
	}
	if time.Since(stored.Created) > time.Minute || stored.Created.After(time.Now().Add(time.Minute)) {
		t.Errorf("created at %v, not now", stored.Created)
	}
	o.Created = stored.Created
	if stored != o {
		t.Fatalf("stored %+v\nwant %+v", stored, o)
	}
	other := o
	other.TotalCents = 1
	again, created, err := s.InsertOrder(ctx, other)
	if err != nil || created || !again.Created.Equal(o.Created) || again.TotalCents != o.TotalCents {
		t.Fatalf("second insert: %+v, created %v, %v; want the first order, not created", again, created, err)
	}
	if got, err := s.GetOrder(ctx, "o1"); err != nil || got.ID != "o1" || got.StockLeft != 9 {
		t.Fatalf("get: %+v, %v", got, err)
	}
	if _, err := s.GetOrder(ctx, "nope"); !errors.Is(err, ErrNoOrder) {
		t.Fatalf("get of a missing order: %v", err)
	}
	for _, id := range []string{"o2", "o3"} {
		if _, _, err := s.InsertOrder(ctx, Order{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.Orders(ctx, 2)
	if err != nil || len(list) != 2 || list[0].ID != "o3" || list[1].ID != "o2" {
		t.Fatalf("newest 2 orders: %+v, %v", list, err)
	}
	if all, err := s.Orders(ctx, 0); err != nil || len(all) != 3 {
		t.Fatalf("all orders: %d, %v", len(all), err)
	}
	if orders, _, err := s.Counts(ctx); err != nil || orders != 3 {
		t.Fatalf("count: %d, %v", orders, err)
	}
}

// BenchmarkDeduct takes one unit per order of a single hot product from
// many goroutines at once, the flash-sale case, with the default retries.
func BenchmarkDeduct(b *testing.B) {
	for _, perCPU := range []int{8, 32} {
		b.Run(fmt.Sprintf("goroutines=%d", perCPU*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			s := newStore(b, Catalog{Products: []Product{{SKU: "hot", Name: "Hot", PriceCents: 100, Stock: 1 << 40}}})
			var next, contended, attempts atomic.Int64
			b.SetParallelism(perCPU)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					d, err := s.Deduct(context.Background(), fmt.Sprintf("b%d", next.Add(1)), "hot", 1)
					switch {
					case errors.Is(err, ErrContention):
						contended.Add(1)
					case err != nil:
						b.Error(err)
					}
					attempts.Add(int64(d.Attempts))
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
			b.ReportMetric(float64(contended.Load())/float64(b.N), "contended/op")
			b.ReportMetric(float64(attempts.Load())/float64(b.N-int(contended.Load())), "attempts/ok")
		})
	}
}

// Two attempts with one order id: the first gives its deduction back
// while the second, which reused it, stores the order. The order must not
// stand without stock: its insert fails, and ordering again deducts anew.
func TestReleasedDeductionCannotCarryAnOrder(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{{SKU: "last", Name: "Last one", PriceCents: 100, Stock: 1}}})
	ctx := context.Background()
	if _, err := s.Deduct(ctx, "x", "last", 1); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Deduct(ctx, "x", "last", 1); err != nil || !d.Replayed {
		t.Fatalf("second attempt: %+v %v, want the deduction replayed", d, err)
	}
	if released, err := s.Release(ctx, "x"); !released || err != nil {
		t.Fatalf("first attempt's release: %v %v", released, err)
	}
	o := Order{ID: "x", User: "ann", SKU: "last", Quantity: 1, PriceCents: 100, TotalCents: 100}
	if _, _, err := s.InsertOrder(ctx, o); !errors.Is(err, ErrNoDeduction) {
		t.Fatalf("second attempt's order: %v, want ErrNoDeduction", err)
	}
	if _, err := s.Deduct(ctx, "y", "last", 1); err != nil {
		t.Fatalf("another customer buys the stock back: %v", err)
	}
	if _, err := s.Deduct(ctx, "x", "last", 1); !errors.Is(err, ErrOutOfStock) {
		t.Fatalf("ordering x again: %v, want out of stock (it was sold to y)", err)
	}
}
