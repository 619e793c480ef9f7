package topology

import (
	"fmt"
	"os"
	"testing"
)

func TestZZScratch(t *testing.T) {
	f := os.Getenv("SCR")
	if f == "" {
		t.Skip()
	}
	top, err := Load(f)
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _ := Marshal(top)
	fmt.Printf("OK\n%s", b)
}
