// The ACME client of golang.org/x/crypto/acme, the package cert-manager's ACME issuer is built on
// (a fork of it) and that autocert uses: an account (with External Account Binding when given),
// an order, http-01 answered here, finalize, the certificate chain; then what cert-manager does on
// its next run: Register with the same key (the account exists), a renewal order on that account,
// and a revocation. Built by tests/test_acme_more_clients.py from Debian's golang-golang-x-crypto-dev
// (GOPATH mode, no network). Prints one line per step; the PEM chains go to -out.
//
// With -autocert HOST:PORT it is instead a Go HTTPS server that gets its certificate with
// golang.org/x/crypto/acme/autocert, as Go services on internal networks do: the first TLS
// handshake for -name makes autocert order it, answering tls-alpn-01 on this same listener.
// Prints "listening" when ready.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

func fail(step string, err error) {
	fmt.Printf("FAIL %s: %v\n", step, err)
	os.Exit(1)
}

func main() {
	directory := flag.String("dir", "", "ACME directory URL")
	rootFile := flag.String("root", "", "the CA root to trust (PEM)")
	name := flag.String("name", "", "the DNS name to order")
	httpPort := flag.Int("http01", 0, "port to answer http-01 on (127.0.0.1)")
	eabKID := flag.String("eab-kid", "", "External Account Binding key id")
	eabKey := flag.String("eab-hmac", "", "External Account Binding HMAC key, base64url")
	out := flag.String("out", ".", "folder for the chains")
	serveAt := flag.String("autocert", "", "host:port: serve HTTPS there with autocert instead")
	cache := flag.String("cache", "", "autocert's cache folder")
	flag.Parse()

	pool := x509.NewCertPool()
	rootPEM, err := os.ReadFile(*rootFile)
	if err != nil || !pool.AppendCertsFromPEM(rootPEM) {
		fail("root", fmt.Errorf("cannot read %s: %v", *rootFile, err))
	}
	httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	if *serveAt != "" {
		serveWithAutocert(*serveAt, *directory, *name, *cache, httpClient)
		return
	}
	accountKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	client := &acme.Client{Key: accountKey, DirectoryURL: *directory, HTTPClient: httpClient, UserAgent: "cert-manager-like"}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// http-01: answered from memory, as cert-manager's solver pod does.
	var mu sync.Mutex
	answers := map[string]string{}
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *httpPort))
	if err != nil {
		fail("listen", err)
	}
	go http.Serve(listener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		body, ok := answers[r.URL.Path]
		mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	}))

	account := &acme.Account{Contact: []string{"mailto:ops@example.test"}}
	if *eabKID != "" {
		key, err := base64.RawURLEncoding.DecodeString(*eabKey)
		if err != nil {
			fail("eab", err)
		}
		account.ExternalAccountBinding = &acme.ExternalAccountBinding{KID: *eabKID, Key: key}
	}
	registered, err := client.Register(ctx, account, acme.AcceptTOS)
	if err != nil {
		fail("register", err)
	}
	fmt.Printf("registered %s status %s\n", registered.URI, registered.Status)

	// cert-manager registers again on each start; an existing account is answered, not made twice.
	again, err := client.Register(ctx, &acme.Account{Contact: account.Contact}, acme.AcceptTOS)
	if !errors.Is(err, acme.ErrAccountAlreadyExists) {
		fail("register again", fmt.Errorf("want ErrAccountAlreadyExists, got %v (%v)", err, again))
	}
	existing, err := client.GetReg(ctx, "")
	if err != nil || existing.URI != registered.URI {
		fail("get account", fmt.Errorf("%v (%v)", err, existing))
	}
	fmt.Printf("existing account %s\n", existing.URI)

	var first []byte
	for round := 1; round <= 2; round++ {
		order, err := client.AuthorizeOrder(ctx, acme.DomainIDs(*name))
		if err != nil {
			fail("order", err)
		}
		for _, authzURL := range order.AuthzURLs {
			authz, err := client.GetAuthorization(ctx, authzURL)
			if err != nil {
				fail("authorization", err)
			}
			if authz.Status == acme.StatusValid {
				continue
			}
			var chal *acme.Challenge
			for _, c := range authz.Challenges {
				if c.Type == "http-01" {
					chal = c
				}
			}
			if chal == nil {
				fail("challenge", fmt.Errorf("no http-01 among %d challenges", len(authz.Challenges)))
			}
			response, err := client.HTTP01ChallengeResponse(chal.Token)
			if err != nil {
				fail("key authorization", err)
			}
			mu.Lock()
			answers[client.HTTP01ChallengePath(chal.Token)] = response
			mu.Unlock()
			if _, err := client.Accept(ctx, chal); err != nil {
				fail("accept", err)
			}
			if _, err := client.WaitAuthorization(ctx, authzURL); err != nil {
				fail("wait authorization", err)
			}
		}
		order, err = client.WaitOrder(ctx, order.URI)
		if err != nil {
			fail("wait order", err)
		}
		certKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		// cert-manager's CSR: the names in the SAN, the first as CN.
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: *name}, DNSNames: []string{*name}}, crypto.Signer(certKey))
		if err != nil {
			fail("csr", err)
		}
		chain, certURL, err := client.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
		if err != nil {
			fail("finalize", err)
		}
		leaf, err := x509.ParseCertificate(chain[0])
		if err != nil {
			fail("parse", err)
		}
		intermediates := x509.NewCertPool()
		for _, der := range chain[1:] {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				fail("parse chain", err)
			}
			intermediates.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: *name, Roots: pool, Intermediates: intermediates}); err != nil {
			fail("verify", err)
		}
		var text strings.Builder
		for _, der := range chain {
			pem.Encode(&text, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		}
		file := filepath.Join(*out, fmt.Sprintf("chain-%d.pem", round))
		if err := os.WriteFile(file, []byte(text.String()), 0o644); err != nil {
			fail("write", err)
		}
		fmt.Printf("certificate %d %x %d certificates in the chain, at %s\n", round, leaf.SerialNumber, len(chain), certURL)
		if round == 1 {
			first = chain[0]
		}
	}
	if err := client.RevokeCert(ctx, nil, first, acme.CRLReasonSuperseded); err != nil {
		fail("revoke", err)
	}
	fmt.Println("revoked the first")
}

func serveWithAutocert(addr, directory, name, cache string, httpClient *http.Client) {
	manager := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(name),
		Cache:      autocert.DirCache(cache),
		Email:      "ops@example.test",
		Client:     &acme.Client{DirectoryURL: directory, HTTPClient: httpClient},
	}
	server := &http.Server{Addr: addr, TLSConfig: manager.TLSConfig(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from autocert") })}
	fmt.Println("listening")
	if err := server.ListenAndServeTLS("", ""); err != nil {
		fail("serve", err)
	}
}
