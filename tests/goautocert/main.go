// A Go HTTPS server that gets its certificate with golang.org/x/crypto/acme/autocert, as Go
// services on internal networks do: the first TLS handshake for an allowed name makes autocert
// order it, answering tls-alpn-01 on this same listener. Built by tests/test_acme_more_clients.py
// from Debian's golang-golang-x-crypto-dev. Listens on -addr; prints "listening" when ready.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

func main() {
	directory := flag.String("dir", "", "ACME directory URL")
	rootFile := flag.String("root", "", "the CA root to trust (PEM)")
	name := flag.String("name", "", "the one name this server may get a certificate for")
	addr := flag.String("addr", "", "host:port to serve HTTPS on (where the CA validates tls-alpn-01)")
	cache := flag.String("cache", "", "autocert's cache folder")
	flag.Parse()

	pool := x509.NewCertPool()
	rootPEM, err := os.ReadFile(*rootFile)
	if err != nil || !pool.AppendCertsFromPEM(rootPEM) {
		fmt.Println("FAIL root:", err)
		os.Exit(1)
	}
	manager := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(*name),
		Cache:      autocert.DirCache(*cache),
		Email:      "ops@example.test",
		Client: &acme.Client{DirectoryURL: *directory, HTTPClient: &http.Client{
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}},
	}
	server := &http.Server{Addr: *addr, TLSConfig: manager.TLSConfig(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from autocert") })}
	fmt.Println("listening")
	if err := server.ListenAndServeTLS("", ""); err != nil {
		fmt.Println("FAIL serve:", err)
		os.Exit(1)
	}
}
