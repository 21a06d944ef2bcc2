package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// progress shows training progress: a bar redrawn in place on a terminal,
// plain lines every tenth of the run otherwise (logs, CI).
type progress struct {
	w        io.Writer
	tty      bool
	quiet    bool
	mode     string
	total    int
	began    time.Time
	lastDraw time.Time
	lastLine int
}

func newProgress(w io.Writer, quiet bool) *progress {
	p := &progress{w: w, quiet: quiet}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

func (p *progress) start(mode string, total int) {
	p.mode, p.total, p.began, p.lastLine = mode, total, time.Now(), 0
}

func (p *progress) update(done int, history []Evaluation) {
	if p.quiet {
		return
	}
	// The latest evaluation, with the iteration it was taken at: between
	// evaluations it is older than the iteration shown.
	acc := "   -  "
	if len(history) > 0 {
		last := history[len(history)-1]
		acc = fmt.Sprintf("%.4f (iteration %d)", last.Accuracy, last.Iteration)
	}
	elapsed := time.Since(p.began)
	if p.tty {
		if time.Since(p.lastDraw) < 100*time.Millisecond && done < p.total {
			return
		}
		p.lastDraw = time.Now()
		const width = 30
		filled := width * done / p.total
		eta := time.Duration(float64(elapsed) / float64(done) * float64(p.total-done))
		fmt.Fprintf(p.w, "\r%-9s [%s%s] %d/%d  test accuracy %s  eta %v   ", p.mode,
			strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done, p.total, acc, eta.Round(time.Second))
		return
	}
	step := max(1, p.total/10)
	if done == p.total || done-p.lastLine >= step {
		p.lastLine = done
		fmt.Fprintf(p.w, "%s: iteration %d/%d, %v elapsed, test accuracy %s\n", p.mode, done, p.total, elapsed.Round(time.Second), acc)
	}
}

func (p *progress) done() {
	if p.tty && !p.quiet {
		fmt.Fprintln(p.w)
	}
}
