package store

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ParseProduct reads a product from a topology's catalog line,
// "sku=phone-x,name=Phone X,price=68.00,stock=1000"; every field is
// required. The version starts at 0.
func ParseProduct(s string) (Product, error) {
	f, err := fields("product", s, "sku", "name", "price", "stock")
	if err != nil {
		return Product{}, err
	}
	p := Product{SKU: f["sku"], Name: f["name"]}
	if p.PriceCents, err = ParseMoney(f["price"]); err != nil {
		return Product{}, fmt.Errorf("product %q: price: %w", s, err)
	}
	if p.Stock, err = count(f["stock"]); err != nil {
		return Product{}, fmt.Errorf("product %q: stock: %w", s, err)
	}
	return p, nil
}

// ParseCoupon reads a coupon from a topology's catalog line,
// "code=D11-10,discount=10.00,min=50.00,uses=1000"; every field is
// required.
func ParseCoupon(s string) (Coupon, error) {
	f, err := fields("coupon", s, "code", "discount", "min", "uses")
	if err != nil {
		return Coupon{}, err
	}
	c := Coupon{Code: f["code"]}
	if c.DiscountCents, err = ParseMoney(f["discount"]); err != nil {
		return Coupon{}, fmt.Errorf("coupon %q: discount: %w", s, err)
	}
	if c.MinTotalCents, err = ParseMoney(f["min"]); err != nil {
		return Coupon{}, fmt.Errorf("coupon %q: min: %w", s, err)
	}
	if c.Remaining, err = count(f["uses"]); err != nil {
		return Coupon{}, fmt.Errorf("coupon %q: uses: %w", s, err)
	}
	return c, nil
}

// fields splits "k=v,k=v" into a map holding exactly the keys want, each
// once and not empty.
func fields(kind, s string, want ...string) (map[string]string, error) {
	f := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch _, dup := f[k]; {
		case !ok:
			return nil, fmt.Errorf("%s %q: %q is not key=value", kind, s, kv)
		case !slices.Contains(want, k):
			return nil, fmt.Errorf("%s %q: unknown field %q (want %s)", kind, s, k, strings.Join(want, ", "))
		case dup:
			return nil, fmt.Errorf("%s %q: field %s given twice", kind, s, k)
		case v == "":
			return nil, fmt.Errorf("%s %q: field %s is empty", kind, s, k)
		}
		f[k] = v
	}
	for _, k := range want {
		if _, ok := f[k]; !ok {
			return nil, fmt.Errorf("%s %q: field %s is missing", kind, s, k)
		}
	}
	return f, nil
}

// count parses a whole number of at least 0.
func count(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a whole number >= 0", s)
	}
	return n, nil
}

// ParseMoney reads an amount of at least 0 with up to two decimals
// ("68", "68.5", "68.00") as cents.
func ParseMoney(s string) (int64, error) {
	units, frac, hasFrac := strings.Cut(s, ".")
	bad := fmt.Errorf("%q is not an amount like 68.00", s)
	if units == "" || strings.Trim(units, "0123456789") != "" || len(units) > 15 ||
		hasFrac && (frac == "" || len(frac) > 2 || strings.Trim(frac, "0123456789") != "") {
		return 0, bad
	}
	n, err := strconv.ParseInt(units, 10, 64)
	if err != nil {
		return 0, bad
	}
	cents := n * 100
	if frac != "" {
		c, _ := strconv.ParseInt(frac, 10, 64) // digits only, checked above
		if len(frac) == 1 {
			c *= 10
		}
		cents += c
	}
	return cents, nil
}

// FormatCents writes cents as an amount with two decimals: 6800 → "68.00".
func FormatCents(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	return fmt.Sprintf("%s%d.%02d", sign, cents/100, cents%100)
}
