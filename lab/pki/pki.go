// Package pki is the lab's own certificate authority (story stages 5 and
// 8: the TLS the phone checks, terminated at the shop's SLBs): a root CA,
// an intermediate CA and a server certificate for the shop's names, kept in
// the lab's state directory. Subscribers trust the lab root explicitly;
// nothing is ever added to the host's trust store.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names under a bundle's directory. The CA keys stay next to their
// certificates so a new server certificate can be issued without a new CA.
const (
	rootFile         = "root.pem"
	rootKeyFile      = "root.key"
	intermediateFile = "intermediate.pem"
	intermediateKey  = "intermediate.key"
	serverFile       = "server.pem"
	serverKeyFile    = "server.key"
	haproxyFile      = "haproxy.pem"
)

// Lifetimes. A certificate is reissued once it is within renewBefore of
// its end; notBefore is backdated by backdate against small clock skew.
const (
	rootLife         = 10 * 365 * 24 * time.Hour
	intermediateLife = 5 * 365 * 24 * time.Hour
	leafLife         = 365 * 24 * time.Hour
	renewBefore      = 30 * 24 * time.Hour
	backdate         = 5 * time.Minute
)

// Bundle holds the paths of a lab's certificate files.
type Bundle struct {
	Dir          string
	Root         string // root.pem: the lab root CA certificate (what subscribers trust)
	Intermediate string // intermediate.pem
	ServerChain  string // server.pem: leaf + intermediate
	ServerKey    string // server.key (0600)
	HAProxyPEM   string // haproxy.pem: leaf + intermediate + key (0600), for `bind ... ssl crt`

	// Changed is set by Ensure when it wrote any certificate file.
	Changed bool
}

// Paths returns the bundle's file paths under dir without touching them.
func Paths(dir string) Bundle {
	return Bundle{
		Dir:          dir,
		Root:         filepath.Join(dir, rootFile),
		Intermediate: filepath.Join(dir, intermediateFile),
		ServerChain:  filepath.Join(dir, serverFile),
		ServerKey:    filepath.Join(dir, serverKeyFile),
		HAProxyPEM:   filepath.Join(dir, haproxyFile),
	}
}

// pair is a certificate with its private key.
type pair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// sans are a server certificate's subject alternative names.
type sans struct {
	dns []string
	ips []net.IP
}

// Ensure creates the CA chain and a server certificate for names (DNS
// names; entries that parse as IPs become IP SANs) under dir, or keeps
// what is there when it is complete, verifies (root → intermediate → leaf)
// and covers every name. A missing, corrupt, mismatched or nearly expired
// file is replaced, and so is everything it signs. lab is used in the
// subjects ("labctl <lab> Root CA", "labctl <lab> Intermediate CA").
func Ensure(dir, lab string, names []string) (Bundle, error) {
	b := Paths(dir)
	if lab == "" {
		return b, errors.New("pki: lab name is empty")
	}
	want, err := parseNames(names)
	if err != nil {
		return b, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return b, fmt.Errorf("pki: %w", err)
	}
	before := b.contents()
	now := time.Now()
	root, err := ensureCA(b.Root, filepath.Join(dir, rootKeyFile), nil, now, func() (*pair, error) {
		return issue(caTemplate("labctl "+lab+" Root CA", rootLife, 1, now), nil)
	})
	if err != nil {
		return b, err
	}
	inter, err := ensureCA(b.Intermediate, filepath.Join(dir, intermediateKey), root, now, func() (*pair, error) {
		return issue(caTemplate("labctl "+lab+" Intermediate CA", intermediateLife, 0, now), root)
	})
	if err != nil {
		return b, err
	}
	leaf, err := ensureLeaf(b, root, inter, want, lab, now)
	if err != nil {
		return b, err
	}
	err = ensureHAProxyPEM(b, leaf, inter)
	b.Changed = !maps.Equal(before, b.contents())
	return b, err
}

// contents reads the files subscribers and servers use (missing: "").
func (b Bundle) contents() map[string]string {
	out := map[string]string{}
	for _, p := range []string{b.Root, b.Intermediate, b.ServerChain, b.ServerKey, b.HAProxyPEM} {
		data, _ := os.ReadFile(p)
		out[p] = string(data)
	}
	return out
}

// parseNames validates the server names and splits them into DNS names
// (lower-cased) and IP addresses, dropping duplicates.
func parseNames(names []string) (sans, error) {
	var s sans
	if len(names) == 0 {
		return s, errors.New("pki: no server names given")
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(s.ips, ip.Equal) {
				s.ips = append(s.ips, ip)
			}
			continue
		}
		n = strings.ToLower(n)
		if err := checkDNSName(n); err != nil {
			return s, fmt.Errorf("pki: server name %q: %w", n, err)
		}
		if !slices.Contains(s.dns, n) {
			s.dns = append(s.dns, n)
		}
	}
	return s, nil
}

// checkDNSName accepts a lower-case host name of letters, digits and
// inner hyphens, optionally with a leading "*." wildcard label.
func checkDNSName(n string) error {
	if n == "" || len(n) > 253 {
		return errors.New("must be 1 to 253 characters")
	}
	labels := strings.Split(strings.TrimPrefix(n, "*."), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("every label must be 1 to 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("label %q has a character other than a-z, 0-9 and '-'", l)
			}
		}
	}
	return nil
}

// ensureCA keeps the CA at certPath/keyPath when it loads, is signed by
// parent (or by itself when parent is nil) and is within its validity;
// otherwise it makes a new one with create and writes it.
func ensureCA(certPath, keyPath string, parent *pair, now time.Time, create func() (*pair, error)) (*pair, error) {
	p, err := loadPair(certPath, keyPath)
	if err == nil {
		err = checkCA(p, parent, now)
	}
	if err == nil {
		return p, keepKeyPrivate(keyPath)
	}
	if p, err = create(); err != nil {
		return nil, err
	}
	if err := writePEM(keyPath, 0o600, keyBlock(p.key)); err != nil {
		return nil, err
	}
	return p, writePEM(certPath, 0o644, certBlock(p.cert))
}

// checkCA tells why p cannot serve as a CA under parent, or nil.
func checkCA(p, parent *pair, now time.Time) error {
	if !p.cert.IsCA || !p.cert.BasicConstraintsValid {
		return errors.New("not a CA certificate")
	}
	issuer := p.cert
	if parent != nil {
		issuer = parent.cert
	}
	if err := p.cert.CheckSignatureFrom(issuer); err != nil {
		return err
	}
	return checkTime(p.cert, now)
}

// checkTime tells whether cert is valid now and not within renewBefore
// of its end.
func checkTime(cert *x509.Certificate, now time.Time) error {
	if now.Before(cert.NotBefore) || now.Add(renewBefore).After(cert.NotAfter) {
		return fmt.Errorf("valid %s to %s: not usable now", cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// ensureLeaf keeps the server certificate when server.pem is exactly leaf
// + inter, its key matches and it verifies to root for every name;
// otherwise it issues a new one.
func ensureLeaf(b Bundle, root, inter *pair, want sans, lab string, now time.Time) (*pair, error) {
	leaf, err := loadLeaf(b, inter)
	if err == nil {
		err = checkLeaf(leaf.cert, root, inter, want, now)
	}
	if err == nil {
		return leaf, keepKeyPrivate(b.ServerKey)
	}
	if leaf, err = issue(leafTemplate(want, lab, now), inter); err != nil {
		return nil, err
	}
	if err := writePEM(b.ServerKey, 0o600, keyBlock(leaf.key)); err != nil {
		return nil, err
	}
	return leaf, writePEM(b.ServerChain, 0o644, certBlock(leaf.cert), certBlock(inter.cert))
}

// loadLeaf reads the server chain and key, requiring the chain to be one
// leaf followed by inter.
func loadLeaf(b Bundle, inter *pair) (*pair, error) {
	leaf, err := loadPair(b.ServerChain, b.ServerKey)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(b.ServerChain)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(data, encode(certBlock(leaf.cert), certBlock(inter.cert))) {
		return nil, fmt.Errorf("%s: not the leaf followed by the current intermediate", b.ServerChain)
	}
	return leaf, nil
}

// checkLeaf tells why leaf is not a usable server certificate for want
// under root and inter, or nil.
func checkLeaf(leaf *x509.Certificate, root, inter *pair, want sans, now time.Time) error {
	if err := checkTime(leaf, now); err != nil {
		return err
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.cert)
	inters.AddCert(inter.cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return err
	}
	for _, n := range want.dns {
		if !slices.Contains(leaf.DNSNames, n) {
			return fmt.Errorf("does not name %s", n)
		}
	}
	for _, ip := range want.ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return fmt.Errorf("does not name %s", ip)
		}
	}
	return nil
}

// ensureHAProxyPEM writes leaf + intermediate + key for HAProxy unless
// the file already holds exactly that.
func ensureHAProxyPEM(b Bundle, leaf, inter *pair) error {
	want := encode(certBlock(leaf.cert), certBlock(inter.cert), keyBlock(leaf.key))
	if have, err := os.ReadFile(b.HAProxyPEM); err == nil && bytes.Equal(have, want) {
		return keepKeyPrivate(b.HAProxyPEM)
	}
	return writeFile(b.HAProxyPEM, 0o600, want)
}

// keepKeyPrivate makes a kept key file 0600 again should someone have
// widened it.
func keepKeyPrivate(path string) error {
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// caTemplate is a CA certificate template; maxPathLen 0 makes a CA that
// may only sign leaves.
func caTemplate(cn string, life time.Duration, maxPathLen int, now time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"labctl"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(life),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

// leafTemplate is the server certificate template for names; its common
// name is the first DNS name, else the first IP.
func leafTemplate(names sans, lab string, now time.Time) *x509.Certificate {
	var cn string
	if len(names.dns) > 0 {
		cn = names.dns[0]
	} else {
		cn = names.ips[0].String()
	}
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"labctl " + lab}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(leafLife),
		DNSNames:              names.dns,
		IPAddresses:           names.ips,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// issue makes a fresh P-256 key and a certificate for it from tmpl,
// signed by parent, or self-signed when parent is nil. It sets a random
// 128-bit serial and the subject and authority key ids, and never lets
// the certificate outlive its issuer.
func issue(tmpl *x509.Certificate, parent *pair) (*pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	if tmpl.SubjectKeyId, err = keyID(&key.PublicKey); err != nil {
		return nil, err
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
		if tmpl.NotAfter.After(issuer.NotAfter) {
			tmpl.NotAfter = issuer.NotAfter
		}
	}
	tmpl.AuthorityKeyId = issuer.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("pki: sign %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new %q: %w", tmpl.Subject.CommonName, err)
	}
	return &pair{cert: cert, key: key}, nil
}

// keyID is the key identifier of pub per RFC 7093 method 1: the leftmost
// 160 bits of the SHA-256 of the subjectPublicKey.
func keyID(pub *ecdsa.PublicKey) ([]byte, error) {
	b, err := pub.Bytes()
	if err != nil {
		return nil, fmt.Errorf("pki: public key: %w", err)
	}
	sum := sha256.Sum256(b)
	return sum[:20], nil
}

// loadPair reads the first certificate of certPath and the PKCS #8 key
// of keyPath and checks that they belong together.
func loadPair(certPath, keyPath string) (*pair, error) {
	cert, err := readCert(certPath)
	if err != nil {
		return nil, err
	}
	block, err := readBlock(keyPath, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s: not the key of %s", keyPath, certPath)
	}
	return &pair{cert: cert, key: key}, nil
}

// readCert parses the first certificate in path.
func readCert(path string) (*x509.Certificate, error) {
	block, err := readBlock(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cert, nil
}

// readBlock returns the first PEM block of path, which must be of type typ.
func readBlock(path, typ string) (*pem.Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("%s: no %s PEM block", path, typ)
	}
	return block, nil
}

func certBlock(c *x509.Certificate) *pem.Block {
	return &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}
}

// keyBlock is key in PKCS #8. Marshalling a P-256 key cannot fail.
func keyBlock(key *ecdsa.PrivateKey) *pem.Block {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic("pki: marshal P-256 key: " + err.Error())
	}
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
}

func encode(blocks ...*pem.Block) []byte {
	var buf bytes.Buffer
	for _, b := range blocks {
		buf.Write(pem.EncodeToMemory(b))
	}
	return buf.Bytes()
}

func writePEM(path string, mode os.FileMode, blocks ...*pem.Block) error {
	return writeFile(path, mode, encode(blocks...))
}

// writeFile replaces path atomically and durably with data: a temporary
// file in the same directory, created with mode, synced, then renamed.
func writeFile(path string, mode os.FileMode, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}
