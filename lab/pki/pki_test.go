package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var shopNames = []string{"www.shop.example", "shop.example", "10.20.0.10"}

// certs parses every certificate in a PEM file.
func certs(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, c)
	}
}

// chain returns the root, intermediate and leaf of a bundle, checking
// that server.pem is exactly leaf + intermediate.
func chain(t *testing.T, b Bundle) (root, inter, leaf *x509.Certificate) {
	t.Helper()
	server := certs(t, b.ServerChain)
	if len(server) != 2 {
		t.Fatalf("server.pem holds %d certificates, want leaf + intermediate", len(server))
	}
	root, inter = certs(t, b.Root)[0], certs(t, b.Intermediate)[0]
	if !server[1].Equal(inter) {
		t.Fatal("server.pem's second certificate is not intermediate.pem")
	}
	return root, inter, server[0]
}

// verify checks the leaf against the lab root alone for name.
func verify(root, inter, leaf *x509.Certificate, name string) error {
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inters.AddCert(inter)
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// snapshot reads every file of a bundle.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range []string{rootFile, rootKeyFile, intermediateFile, intermediateKey, serverFile, serverKeyFile, haproxyFile} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		out[f] = data
	}
	return out
}

func ensure(t *testing.T, dir string, names []string) Bundle {
	t.Helper()
	b, err := Ensure(dir, "double11", names)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEnsureChainVerifiesWithLabRootOnly(t *testing.T) {
	b := ensure(t, t.TempDir(), shopNames)
	root, inter, leaf := chain(t, b)
	for _, n := range shopNames {
		if err := verify(root, inter, leaf, n); err != nil {
			t.Errorf("verify %s: %v", n, err)
		}
	}
	if err := verify(root, inter, leaf, "evil.example"); err == nil {
		t.Error("leaf verifies for a name it was not issued for")
	}
	system, err := x509.SystemCertPool()
	if err != nil {
		t.Fatal(err)
	}
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: "www.shop.example", Roots: system, Intermediates: inters})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("verify with the system pool: %v, want an unknown authority error", err)
	}
}

func TestEnsureCertificateProfile(t *testing.T) {
	root, inter, leaf := chain(t, ensure(t, t.TempDir(), shopNames))
	year := 365 * 24 * time.Hour
	for _, tc := range []struct {
		c       *x509.Certificate
		subject string
		life    time.Duration
		ca      bool
	}{
		{root, "CN=labctl double11 Root CA,O=labctl", 10 * year, true},
		{inter, "CN=labctl double11 Intermediate CA,O=labctl", 5 * year, true},
		{leaf, "CN=www.shop.example,O=labctl double11", year, false},
	} {
		c := tc.c
		if got := c.Subject.String(); got != tc.subject {
			t.Errorf("subject %q, want %q", got, tc.subject)
		}
		if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: key is not ECDSA P-256", tc.subject)
		}
		if n := c.SerialNumber; n.Sign() <= 0 || n.BitLen() > 128 {
			t.Errorf("%s: serial %v is not a positive 128-bit number", tc.subject, n)
		}
		if d := c.NotAfter.Sub(c.NotBefore) - backdate; d < tc.life-time.Minute || d > tc.life+time.Minute {
			t.Errorf("%s: valid for %v, want %v", tc.subject, d, tc.life)
		}
		if c.IsCA != tc.ca || !c.BasicConstraintsValid {
			t.Errorf("%s: IsCA %v, want %v", tc.subject, c.IsCA, tc.ca)
		}
		if len(c.SubjectKeyId) == 0 {
			t.Errorf("%s: no subject key id", tc.subject)
		}
	}
	if inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("intermediate MaxPathLen %d zero=%v, want 0 and true", inter.MaxPathLen, inter.MaxPathLenZero)
	}
	if !bytes.Equal(inter.AuthorityKeyId, root.SubjectKeyId) || !bytes.Equal(leaf.AuthorityKeyId, inter.SubjectKeyId) {
		t.Error("authority key ids do not name the issuers' subject key ids")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("leaf key usage %v %v, want digital signature and server auth", leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	if fmt.Sprint(leaf.DNSNames, leaf.IPAddresses) != "[www.shop.example shop.example] [10.20.0.10]" {
		t.Errorf("leaf SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
}

func TestTLSHandshake(t *testing.T) {
	b := ensure(t, t.TempDir(), shopNames)
	cert, err := tls.LoadX509KeyPair(b.ServerChain, b.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			io.WriteString(c, "hello")
			c.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(certs(t, b.Root)[0])
	dialer := &net.Dialer{Timeout: 5 * time.Second}

	c, err := tls.DialWithDialer(dialer, "tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "www.shop.example"})
	if err != nil {
		t.Fatalf("handshake trusting the lab root: %v", err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hello" {
		t.Errorf("read %q over TLS, want hello", got)
	}

	_, err = tls.DialWithDialer(dialer, "tcp", ln.Addr().String(), &tls.Config{ServerName: "www.shop.example"})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("handshake trusting the system roots: %v, want an unknown authority error", err)
	}
}

func TestHAProxyPEM(t *testing.T) {
	b := ensure(t, t.TempDir(), shopNames)
	data, err := os.ReadFile(b.HAProxyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		types = append(types, block.Type)
	}
	if strings.Join(types, ",") != "CERTIFICATE,CERTIFICATE,PRIVATE KEY" {
		t.Errorf("haproxy.pem blocks %v, want leaf, intermediate, key", types)
	}
	serverChain, _ := os.ReadFile(b.ServerChain)
	serverKey, _ := os.ReadFile(b.ServerKey)
	if !bytes.Equal(data, append(serverChain, serverKey...)) {
		t.Error("haproxy.pem is not server.pem followed by server.key")
	}
}

func TestEnsureKeepsCompleteBundle(t *testing.T) {
	dir := t.TempDir()
	if b := ensure(t, dir, shopNames); !b.Changed {
		t.Error("a new bundle is not reported as changed")
	}
	before := snapshot(t, dir)
	// The same names in another order and case are the same request.
	if b := ensure(t, dir, []string{"10.20.0.10", "SHOP.example", "www.shop.example", "shop.example"}); b.Changed {
		t.Error("a kept bundle is reported as changed")
	}
	after := snapshot(t, dir)
	for f := range before {
		if !bytes.Equal(before[f], after[f]) {
			t.Errorf("%s changed on a second Ensure", f)
		}
	}
	// A subset of the leaf's names is covered too.
	ensure(t, dir, []string{"www.shop.example"})
	if !bytes.Equal(snapshot(t, dir)[serverFile], before[serverFile]) {
		t.Error("server.pem reissued for a name it already covers")
	}
}

func TestEnsureNewNameReissuesLeafOnly(t *testing.T) {
	dir := t.TempDir()
	ensure(t, dir, shopNames)
	before := snapshot(t, dir)
	b := ensure(t, dir, append(shopNames, "api.shop.example"))
	if !b.Changed {
		t.Error("a reissued leaf is not reported as changed")
	}
	after := snapshot(t, dir)
	for _, f := range []string{rootFile, rootKeyFile, intermediateFile, intermediateKey} {
		if !bytes.Equal(before[f], after[f]) {
			t.Errorf("%s changed for a new server name", f)
		}
	}
	for _, f := range []string{serverFile, serverKeyFile, haproxyFile} {
		if bytes.Equal(before[f], after[f]) {
			t.Errorf("%s kept although a name was added", f)
		}
	}
	root, inter, leaf := chain(t, b)
	for _, n := range append(shopNames, "api.shop.example") {
		if err := verify(root, inter, leaf, n); err != nil {
			t.Errorf("verify %s: %v", n, err)
		}
	}
}

func TestEnsureRegeneratesDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(dir string) error
		kept   []string // files that must keep their bytes
		redone []string // files that must change
	}{
		{"corrupt server.pem", corrupt(serverFile),
			[]string{rootFile, intermediateFile}, []string{serverFile, serverKeyFile, haproxyFile}},
		{"missing server.key", remove(serverKeyFile),
			[]string{rootFile, intermediateFile}, []string{serverFile, haproxyFile}},
		{"missing haproxy.pem", remove(haproxyFile),
			[]string{rootFile, intermediateFile, serverFile, serverKeyFile}, nil},
		{"truncated haproxy.pem", truncate(haproxyFile),
			[]string{rootFile, intermediateFile, serverFile, serverKeyFile}, nil},
		{"corrupt intermediate.pem", corrupt(intermediateFile),
			[]string{rootFile, rootKeyFile}, []string{intermediateFile, serverFile}},
		{"intermediate key of another CA", swapKey(intermediateKey, serverKeyFile),
			[]string{rootFile}, []string{intermediateFile, serverFile}},
		{"missing root.key", remove(rootKeyFile),
			nil, []string{rootFile, intermediateFile, serverFile}},
		{"missing root.pem", remove(rootFile),
			nil, []string{rootKeyFile, intermediateFile, serverFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ensure(t, dir, shopNames)
			before := snapshot(t, dir)
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			b := ensure(t, dir, shopNames)
			after := snapshot(t, dir)
			for _, f := range tc.kept {
				if !bytes.Equal(before[f], after[f]) {
					t.Errorf("%s changed", f)
				}
			}
			for _, f := range tc.redone {
				if bytes.Equal(before[f], after[f]) {
					t.Errorf("%s not regenerated", f)
				}
			}
			root, inter, leaf := chain(t, b)
			if err := verify(root, inter, leaf, "www.shop.example"); err != nil {
				t.Errorf("regenerated chain does not verify: %v", err)
			}
			hp, _ := os.ReadFile(b.HAProxyPEM)
			if !bytes.Equal(hp, append(after[serverFile], after[serverKeyFile]...)) {
				t.Error("haproxy.pem does not match server.pem + server.key")
			}
		})
	}
}

func corrupt(f string) func(string) error {
	return func(dir string) error {
		return os.WriteFile(filepath.Join(dir, f), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644)
	}
}

func remove(f string) func(string) error {
	return func(dir string) error { return os.Remove(filepath.Join(dir, f)) }
}

func truncate(f string) func(string) error {
	return func(dir string) error { return os.Truncate(filepath.Join(dir, f), 100) }
}

// swapKey overwrites key file dst with the contents of src.
func swapKey(dst, src string) func(string) error {
	return func(dir string) error {
		data, err := os.ReadFile(filepath.Join(dir, src))
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, dst), data, 0o600)
	}
}

func TestKeyFileModes(t *testing.T) {
	dir := t.TempDir()
	ensure(t, dir, shopNames)
	private := []string{rootKeyFile, intermediateKey, serverKeyFile, haproxyFile}
	check := func() {
		t.Helper()
		for _, f := range private {
			st, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
			}
		}
	}
	check()
	for _, f := range private {
		if err := os.Chmod(filepath.Join(dir, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ensure(t, dir, shopNames)
	check()
	if m, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(m) > 0 {
		t.Errorf("temporary files left behind: %v", m)
	}
}

func TestEnsureValidatesInput(t *testing.T) {
	for _, tc := range []struct {
		lab   string
		names []string
		want  string
	}{
		{"double11", nil, "no server names"},
		{"double11", []string{""}, `server name ""`},
		{"double11", []string{"shop example"}, `"shop example"`},
		{"double11", []string{"-shop.example"}, "hyphen"},
		{"double11", []string{"shop..example"}, "label"},
		{"double11", []string{"a.*.example"}, `"*"`},
		{"double11", []string{strings.Repeat("a", 64) + ".example"}, "63"},
		{"", shopNames, "lab name"},
	} {
		dir := t.TempDir()
		_, err := Ensure(dir, tc.lab, tc.names)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Ensure(%q, %q): %v, want an error mentioning %s", tc.lab, tc.names, err, tc.want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			t.Errorf("Ensure(%q, %q) wrote files despite the error", tc.lab, tc.names)
		}
	}
}

func TestEnsureIPOnlyAndWildcard(t *testing.T) {
	b := ensure(t, t.TempDir(), []string{"127.0.0.1", "::1"})
	_, _, leaf := chain(t, b)
	if leaf.Subject.CommonName != "127.0.0.1" || len(leaf.IPAddresses) != 2 || len(leaf.DNSNames) != 0 {
		t.Errorf("IP-only leaf: CN %q, IPs %v, DNS %v", leaf.Subject.CommonName, leaf.IPAddresses, leaf.DNSNames)
	}
	b = ensure(t, t.TempDir(), []string{"*.shop.example"})
	root, inter, leaf := chain(t, b)
	if err := verify(root, inter, leaf, "cart.shop.example"); err != nil {
		t.Errorf("wildcard leaf: %v", err)
	}
}
