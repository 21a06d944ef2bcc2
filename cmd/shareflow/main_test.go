package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
)

// runArgs runs the command line in-process and returns the exit status
// and what it printed.
func runArgs(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpListsCommands(t *testing.T) {
	code, out, _ := runArgs("help")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "certs")
	assert.Contains(t, out, "make a development CA")
	assert.Contains(t, out, "help")

	code, out, _ = runArgs("help", "certs")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "usage: shareflow certs --config FILE")
	assert.Contains(t, out, "-force")

	code, _, errOut := runArgs()
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "Commands:")

	code, _, errOut = runArgs("frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unknown command "frobnicate"`)

	code, _, errOut = runArgs("help", "frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unknown command "frobnicate"`)
}

func TestBadFlags(t *testing.T) {
	code, _, errOut := runArgs("certs", "--no-such-flag")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "flag provided but not defined: -no-such-flag")
	assert.Contains(t, errOut, "usage: shareflow certs")

	code, _, errOut = runArgs("certs")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "shareflow certs: --config is required")
	assert.Contains(t, errOut, "shareflow help certs")

	code, _, errOut = runArgs("certs", "--config", "x.json", "extra")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unexpected argument "extra"`)

	code, _, errOut = runArgs("certs", "-h")
	assert.Equal(t, 0, code)
	assert.Contains(t, errOut, "usage: shareflow certs")
}

func TestUpperFirst(t *testing.T) {
	assert.Equal(t, "Make x", upperFirst("make x"))
	assert.Equal(t, "", upperFirst(""))
	assert.Equal(t, "1x", upperFirst("1x"))
}
