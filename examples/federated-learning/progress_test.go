package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Off a terminal, progress prints a line every tenth of the run, naming
// the iteration the accuracy shown was measured at.
func TestProgressLines(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, false)
	p.start("secure", 20)
	history := []Evaluation{{Iteration: 0, Accuracy: 0.1}}
	for i := 1; i <= 20; i++ {
		if i == 10 {
			history = append(history, Evaluation{Iteration: 10, Accuracy: 0.75})
		}
		p.update(i, history)
	}
	p.done()
	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	assert.Len(t, lines, 10)
	assert.Contains(t, string(lines[0]), "secure: iteration 2/20")
	assert.Contains(t, string(lines[0]), "test accuracy 0.1000 (iteration 0)")
	assert.Contains(t, string(lines[9]), "secure: iteration 20/20")
	assert.Contains(t, string(lines[9]), "test accuracy 0.7500 (iteration 10)")

	out.Reset()
	quiet := newProgress(&out, true)
	quiet.start("secure", 20)
	quiet.update(20, history)
	assert.Empty(t, out.String())
}
