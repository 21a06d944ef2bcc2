// Package players names the parties of a computation, says where they run
// and holds the TLS material that lets them recognise each other.
//
// # Host configuration
//
// Every host of a remote run reads the same JSON file. TF Encrypted's flat
// hostmap is accepted as is:
//
//	{
//	  "server0":      "10.0.0.1:4440",
//	  "server1":      "10.0.0.2:4440",
//	  "server2":      "10.0.0.3:4440",
//	  "model-owner":  "10.0.0.4:4440",
//	  "data-owner-0": "10.0.0.5:4440"
//	}
//
// The extended form nests the players under "players" and adds settings;
// a player is either an address string or an object:
//
//	{
//	  "players": {
//	    "server0": {"address": "10.0.0.1:4440", "listen": "0.0.0.0:4440",
//	                "cert": "certs/server0.pem", "key": "certs/server0-key.pem"},
//	    "server1": "10.0.0.2:4440"
//	  },
//	  "ca": "certs/ca.pem",
//	  "cert_dir": "certs",
//	  "connect_timeout": "30s",
//	  "message_timeout": "60s",
//	  "max_message_bytes": 268435456,
//	  "insecure": false,
//	  "open_membership": true,
//	  "max_members": 1000,
//	  "min_owners": 2
//	}
//
// A player given as an object without "address", such as
// "data-owner-0": {}, only dials out: it listens nowhere, and the others
// reach it over the connections it opens (Config.Listens). At least one
// player must have an address.
//
// Zero or absent settings take their defaults. Relative paths resolve
// against the directory of the config file. With "cert_dir" (or
// Config.WithCertDir, for a flat hostmap plus a --certs flag) the CA is
// DIR/ca.pem and player NAME's certificate and key are DIR/NAME.pem and
// DIR/NAME-key.pem, unless "ca", "cert" or "key" name other files.
//
// LoadConfig and ParseConfig check everything that can be checked without
// knowing which player is reading: JSON syntax (with line and column),
// duplicate and unknown keys, player names, addresses, durations and limits.
// An unknown key is reported with the field it probably meant. A program
// that needs particular players checks them with Config.Require, which
// points at a key that looks like a misspelling of a missing player:
//
//	players: hosts.json:3:3: players.data-ower-1: unknown player "data-ower-1"; did you mean "data-owner-1"?
//
// The one host that plays a given player then calls Config.LoadIdentity,
// which reads and checks that player's certificate and key and the CA; the
// other players' keys are not on that host.
//
// # Open membership
//
// The hostmap needs to list only the servers, the crypto producer and the
// model owner:
//
//	{
//	  "server0":     "10.0.0.1:4440",
//	  "server1":     "10.0.0.2:4440",
//	  "server2":     "10.0.0.3:4440",
//	  "model-owner": "10.0.0.4:4440"
//	}
//
// Any data owner (a name data-owner-N) holding a certificate from the
// federation's CA may then connect, without being listed (Config.Admits):
// that is open membership, the config's "open_membership". It is on by
// default when the config lists no data owner and off when it lists some,
// so TF Encrypted's hostmap, which lists every data owner, keeps working
// as it did; either may say otherwise. "max_members" (default
// DefaultMaxMembers) bounds how many unlisted data owners a player takes
// at once. Such a data owner runs with the same config under its own
// name: LoadIdentity finds its certificate and key in the certificate
// directory, and it only dials out. Unlisted data owners are no part of
// Config.Fingerprint, so they need not agree with anyone on a list of
// members; which players only dial out is. IssueCerts mints their
// certificates with a development CA made earlier. "min_owners" is the
// privacy floor of rounds of a cohort (Config.MinOwners): programs pass it
// to session.RoundOptions, and values below 2 are refused.
//
// # Certificates
//
// A player's identity is carried in its certificate as exactly one URI SAN
// shareflow://player/NAME. The certificate also carries NAME as a DNS SAN,
// so that the standard TLS hostname check against the player name succeeds,
// plus DNS or IP SANs for the host of the player's address, so that ordinary
// hostname verification works as well. Certificates must allow both server
// and client authentication, since every player is both. GenerateDevPKI
// makes such a set for trying things out: an ECDSA P-256 CA and one
// certificate per player.
//
// IssueCerts adds certificates signed by the CA a GenerateDevPKI left in
// its directory, without touching the CA or the other players' files: how
// data owners that join later get theirs.
//
// ServerTLS and ClientTLS (or the methods of Identity) build mutually
// authenticated TLS 1.3 configurations: a client connecting to player P
// refuses a server whose certificate does not name P, and a server accepts
// only clients whose certificate, signed by the configured CA, names a
// player the config admits (Config.Admits): one it lists, or with open
// membership any data owner. Servers learn who is calling from the verified
// certificate alone (PlayerFromCert).
package players
