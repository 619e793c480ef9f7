package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
)

func TestPatternIsRepeatableAndVaries(t *testing.T) {
	a, _ := io.ReadAll(io.LimitReader(Pattern(), 1<<16))
	// Reading in odd-sized chunks gives the same bytes.
	var b bytes.Buffer
	r := Pattern()
	buf := make([]byte, 777)
	for b.Len() < 1<<16 {
		n, _ := r.Read(buf[:min(len(buf), 1<<16-b.Len())])
		b.Write(buf[:n])
	}
	if !bytes.Equal(a, b.Bytes()) {
		t.Fatal("pattern depends on read sizes")
	}
	if bytes.Equal(a[:8], a[8:16]) {
		t.Fatal("consecutive blocks are equal: a swapped block would go unnoticed")
	}
}

func TestHTTPBytes(t *testing.T) {
	addr := labtest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- HTTP(ctx, addr, "", slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() { cancel(); <-done }()
	var resp *http.Response
	var err error
	for i := 0; i < 50; i++ {
		if resp, err = http.Get(fmt.Sprintf("http://%s/bytes/100000", addr)); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, _ := io.ReadAll(io.LimitReader(Pattern(), 100000))
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("got %d bytes, not the pattern", len(got))
	}
	resp, err = http.Get(fmt.Sprintf("http://%s/bytes/-1", addr))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("negative size: status %d", resp.StatusCode)
	}
}
