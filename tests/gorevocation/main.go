// How Go programs read this CA's revocation answers: golang.org/x/crypto/ocsp (what Caddy staples
// with, and what Go TLS servers and clients check with) and crypto/x509's CRL parser. Given a
// leaf and its issuer (PEM files), asks the OCSP URL in the leaf by POST and by GET, parses each
// answer for the leaf, and fetches the CRL at the leaf's distribution point, checks its signature
// and looks for the serial. Prints one line per check; built by tests/test_revocation.py from
// Debian's golang-golang-x-crypto-dev.
package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"golang.org/x/crypto/ocsp"
)

func load(path string) *x509.Certificate {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Println("FAIL read:", err)
		os.Exit(1)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		fmt.Println("FAIL pem:", path)
		os.Exit(1)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		fmt.Println("FAIL parse:", err)
		os.Exit(1)
	}
	return cert
}

var statusNames = map[int]string{ocsp.Good: "good", ocsp.Revoked: "revoked", ocsp.Unknown: "unknown"}

func report(how string, body []byte, leaf, issuer *x509.Certificate) {
	resp, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		fmt.Printf("ocsp %s: FAIL %v\n", how, err)
		return
	}
	line := fmt.Sprintf("ocsp %s: %s serial %x", how, statusNames[resp.Status], resp.SerialNumber)
	if resp.Status == ocsp.Revoked {
		line += fmt.Sprintf(" reason %d", resp.RevocationReason)
	}
	if resp.NextUpdate.Before(time.Now()) || resp.ThisUpdate.After(time.Now().Add(time.Minute)) {
		line += " OUTSIDE ITS WINDOW"
	}
	fmt.Println(line)
}

func main() {
	leaf, issuer, base := load(os.Args[1]), load(os.Args[2]), os.Args[3]
	client := &http.Client{Timeout: 10 * time.Second}
	request, err := ocsp.CreateRequest(leaf, issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		fmt.Println("FAIL request:", err)
		os.Exit(1)
	}
	server := base + "/ocsp"
	post, err := client.Post(server, "application/ocsp-request", bytes.NewReader(request))
	if err != nil {
		fmt.Println("FAIL post:", err)
		os.Exit(1)
	}
	body, _ := io.ReadAll(post.Body)
	report("post", body, leaf, issuer)
	get, err := client.Get(server + "/" + url.PathEscape(base64.StdEncoding.EncodeToString(request)))
	if err != nil {
		fmt.Println("FAIL get:", err)
		os.Exit(1)
	}
	body, _ = io.ReadAll(get.Body)
	report("get", body, leaf, issuer)

	crlResponse, err := client.Get(base + "/crl/intermediate.crl")
	if err != nil {
		fmt.Println("FAIL crl fetch:", err)
		os.Exit(1)
	}
	der, _ := io.ReadAll(crlResponse.Body)
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		fmt.Println("crl: FAIL", err)
		return
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		fmt.Println("crl: FAIL signature", err)
		return
	}
	listed := false
	for _, entry := range crl.RevokedCertificates {
		if entry.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			listed = true
		}
	}
	fmt.Printf("crl: signed by the issuer, number %v, %d entries, leaf listed %v\n", crl.Number, len(crl.RevokedCertificates), listed)
}
