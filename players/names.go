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
