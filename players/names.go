package players

import (
	"fmt"
	"strconv"
	"strings"
)

// TF Encrypted's default player names. The Pond protocol runs between the
// two compute servers; the crypto producer serves Beaver triples for
// private products and takes no part in aggregation, but exists in every
// configuration for parity with TF Encrypted.
const (
	Server0        = "server0"
	Server1        = "server1"
	CryptoProducer = "server2"
	ModelOwner     = "model-owner"
)

// dataOwnerPrefix starts the name of every data owner: data-owner-0, ...
const dataOwnerPrefix = "data-owner-"

// DataOwner returns the default name of the i-th data owner, data-owner-i.
func DataOwner(i int) string { return dataOwnerPrefix + strconv.Itoa(i) }

// Role says what a player does in a secure-aggregation run.
type Role int

// The roles, as in TF Encrypted's federated-learning example.
const (
	RoleOther          Role = iota // a player with a name we do not know
	RoleComputeServer              // server0, server1: hold secret shares
	RoleCryptoProducer             // server2: serves correlated randomness
	RoleModelOwner                 // receives the revealed aggregate
	RoleDataOwner                  // contributes private inputs
)

var roleNames = [...]string{"other", "compute server", "crypto producer", "model owner", "data owner"}

// String returns the role in words.
func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return fmt.Sprintf("Role(%d)", int(r))
	}
	return roleNames[r]
}

// RoleOf returns the role a default player name implies.
func RoleOf(name string) Role {
	switch {
	case name == Server0 || name == Server1:
		return RoleComputeServer
	case name == CryptoProducer:
		return RoleCryptoProducer
	case name == ModelOwner:
		return RoleModelOwner
	case strings.HasPrefix(name, dataOwnerPrefix):
		if _, err := strconv.Atoi(name[len(dataOwnerPrefix):]); err == nil {
			return RoleDataOwner
		}
	}
	return RoleOther
}

// Defaults returns the names of TF Encrypted's federated-learning example
// with n data owners: the three servers, the model owner and data-owner-0
// to data-owner-(n-1).
func Defaults(n int) []string {
	names := []string{Server0, Server1, CryptoProducer, ModelOwner}
	for i := range n {
		names = append(names, DataOwner(i))
	}
	return names
}

// Suggest returns the default player name (see Defaults) that name is
// most likely a misspelling of, or "" if name is one of the default names
// or close to none: "sever0" suggests "server0", "data-ower-1"
// "data-owner-1", "Model-Owner" "model-owner". A config may name its
// players as it likes, so this is a hint for commands to print, not an
// error.
func Suggest(name string) string {
	if RoleOf(name) != RoleOther {
		return ""
	}
	known := []string{Server0, Server1, CryptoProducer, ModelOwner}
	digits := strings.TrimRightFunc(name, func(r rune) bool { return '0' <= r && r <= '9' })
	if n, err := strconv.Atoi(name[len(digits):]); err == nil {
		known = append(known, DataOwner(n)) // the data owner of the same number
	}
	if s := nearest(name, known); s != name {
		return s
	}
	return ""
}

// nearest returns the name in known that s is most likely a misspelling
// of, or "" if none is close: the smallest edit distance, ignoring case,
// of at most one edit per four bytes of the name (and at least one). So
// "data-ower-1" finds "data-owner-1" and "CA" finds "ca", but "port" does
// not find "cert".
func nearest(s string, known []string) string {
	best, bestDist := "", -1
	for _, k := range known {
		limit := max(1, len(k)/4)
		if len(s) > len(k)+limit || len(k) > len(s)+limit {
			continue // too far apart in length alone; also bounds the work
		}
		d := editDistance(strings.ToLower(s), strings.ToLower(k))
		if d <= limit && (bestDist < 0 || d < bestDist) {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
