// tlogcheck: verifies ca-server's issuance-log checkpoints and proofs with Go's own
// golang.org/x/mod/sumdb/note and tlog packages (the sumdb's verifier), so the formats are the
// standard ones. Reads JSON on stdin; prints "ok" and exits 0, or prints the failure and exits 1.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type input struct {
	Key         string   `json:"key"`
	Checkpoint  string   `json:"checkpoint"`
	Older       string   `json:"older"`
	Entry       string   `json:"entry"`
	Index       int64    `json:"index"`
	Proof       []string `json:"proof"`
	Consistency []string `json:"consistency"`
}

func fail(format string, args ...any) {
	fmt.Printf(format+"\n", args...)
	os.Exit(1)
}

func tree(key, text string) (int64, tlog.Hash) {
	verifier, err := note.NewVerifier(key)
	if err != nil {
		fail("key: %v", err)
	}
	n, err := note.Open([]byte(text), note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint signature: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("checkpoint root: %v", err)
	}
	return size, root
}

func hashes(list []string) []tlog.Hash {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		h, err := tlog.ParseHash(s)
		if err != nil {
			fail("proof hash %d: %v", i, err)
		}
		out[i] = h
	}
	return out
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("input: %v", err)
	}
	size, root := tree(in.Key, in.Checkpoint)
	entry, err := base64.StdEncoding.DecodeString(in.Entry)
	if err != nil {
		fail("entry: %v", err)
	}
	if err := tlog.CheckRecord(tlog.RecordProof(hashes(in.Proof)), size, root, in.Index, tlog.RecordHash(entry)); err != nil {
		fail("inclusion: %v", err)
	}
	if in.Older != "" {
		oldSize, oldRoot := tree(in.Key, in.Older)
		if err := tlog.CheckTree(tlog.TreeProof(hashes(in.Consistency)), size, root, oldSize, oldRoot); err != nil {
			fail("consistency: %v", err)
		}
	}
	fmt.Println("ok")
}
