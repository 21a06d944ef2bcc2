package session

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
)

// playerRand gives every player its own source of seeds, so that no
// reader is shared between the players' goroutines.
//
// Without Options.Rand every player reads crypto/rand.Reader, which is
// safe for concurrent use. With it, the session reads a 32-byte key from
// Options.Rand once, when it is created, and gives each player the stream
// AES-256-CTR under SHA-256(label, key, player name): Options.Rand need
// not be safe for concurrent use, is never read while players run, and a
// seeded Options.Rand makes every player's draws reproducible, whatever
// the order the goroutines run in.
//
// prepare is called with the session's lock held, before the players of
// an iteration start; of is then called by each player's goroutine for its
// own stream only, and each stream is read by one goroutine at a time.
type playerRand struct {
	key     *[32]byte // nil: crypto/rand for everyone
	streams map[string]io.Reader
}

const playerRandLabel = "shareflow/session/player-rand/v1"

func newPlayerRand(src io.Reader) (playerRand, error) {
	if src == nil {
		return playerRand{}, nil
	}
	key := new([32]byte)
	if _, err := io.ReadFull(src, key[:]); err != nil {
		return playerRand{}, fmt.Errorf("session: reading a key from Options.Rand: %w", err)
	}
	return playerRand{key: key, streams: map[string]io.Reader{}}, nil
}

// prepare makes the streams of players that have none yet.
func (p playerRand) prepare(players ...string) {
	if p.key == nil {
		return
	}
	for _, pl := range players {
		if _, ok := p.streams[pl]; ok {
			continue
		}
		h := sha256.New()
		h.Write([]byte(playerRandLabel))
		h.Write([]byte{0})
		h.Write(p.key[:])
		h.Write([]byte(pl))
		block, err := aes.NewCipher(h.Sum(nil))
		if err != nil {
			panic("session: aes.NewCipher with a 32-byte key: " + err.Error())
		}
		p.streams[pl] = keystream{cipher.NewCTR(block, make([]byte, aes.BlockSize))}
	}
}

// of returns player's source of seeds.
func (p playerRand) of(player string) io.Reader {
	if p.key == nil {
		return rand.Reader
	}
	s, ok := p.streams[player]
	if !ok {
		panic(fmt.Sprintf("session: no random stream prepared for %q", player))
	}
	return s
}

// keystream reads a cipher's keystream. It is not safe for concurrent use.
type keystream struct{ s cipher.Stream }

func (k keystream) Read(b []byte) (int, error) {
	clear(b)
	k.s.XORKeyStream(b, b)
	return len(b), nil
}
