package store

import (
	"strings"
	"testing"
)

func TestParseProduct(t *testing.T) {
	p, err := ParseProduct("sku=phone-x, name=Phone X ,price=68.00,stock=1000")
	if want := (Product{SKU: "phone-x", Name: "Phone X", PriceCents: 6800, Stock: 1000}); err != nil || p != want {
		t.Fatalf("got %+v, %v; want %+v", p, err, want)
	}
	for in, msg := range map[string]string{
		"sku=a,name=A,price=1":                            "field stock is missing",
		"sku=a,name=A,price=1,stock=1,color=red":          `unknown field "color"`,
		"sku=a,sku=b,name=A,price=1,stock=1":              "field sku given twice",
		"sku=,name=A,price=1,stock=1":                     "field sku is empty",
		"sku=a,name=A,price=1,stock":                      `"stock" is not key=value`,
		"sku=a,name=A,price=6x,stock=1":                   `price: "6x" is not an amount like 68.00`,
		"sku=a,name=A,price=1.005,stock=1":                `price: "1.005" is not an amount`,
		"sku=a,name=A,price=1,stock=-1":                   `stock: "-1" is not a whole number >= 0`,
		"sku=a,name=A,price=1,stock=99999999999999999999": "stock:",
	} {
		if _, err := ParseProduct(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseProduct(%q) = %v, want an error saying %q", in, err, msg)
		}
	}
}

func TestParseCoupon(t *testing.T) {
	c, err := ParseCoupon("code=D11-10,discount=10.00,min=50,uses=1000")
	if want := (Coupon{Code: "D11-10", DiscountCents: 1000, MinTotalCents: 5000, Remaining: 1000}); err != nil || c != want {
		t.Fatalf("got %+v, %v; want %+v", c, err, want)
	}
	for in, msg := range map[string]string{
		"code=X,discount=1,min=1":              "field uses is missing",
		"code=X,discount=-1,min=1,uses=1":      `discount: "-1" is not an amount`,
		"code=X,discount=1,min=.5,uses=1":      `min: ".5" is not an amount`,
		"code=X,discount=1,min=1,uses=lots":    `uses: "lots" is not a whole number`,
		"code=X,discount=1,min=1,uses=1,sku=a": `unknown field "sku" (want code, discount, min, uses)`,
	} {
		if _, err := ParseCoupon(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseCoupon(%q) = %v, want an error saying %q", in, err, msg)
		}
	}
}

func TestMoney(t *testing.T) {
	for in, cents := range map[string]int64{"68.00": 6800, "68": 6800, "68.5": 6850, "0.05": 5, "0": 0, "1234567.89": 123456789} {
		got, err := ParseMoney(in)
		if err != nil || got != cents {
			t.Errorf("ParseMoney(%q) = %d, %v; want %d", in, got, err, cents)
		}
	}
	for _, in := range []string{"", ".", "1.", "-1", "+1", "1.234", "1e3", "1,00", "1.2x", "9999999999999999"} {
		if got, err := ParseMoney(in); err == nil {
			t.Errorf("ParseMoney(%q) = %d, want an error", in, got)
		}
	}
	for cents, want := range map[int64]string{6800: "68.00", 5: "0.05", 0: "0.00", 123456789: "1234567.89", -50: "-0.50"} {
		if got := FormatCents(cents); got != want {
			t.Errorf("FormatCents(%d) = %q, want %q", cents, got, want)
		}
	}
}
