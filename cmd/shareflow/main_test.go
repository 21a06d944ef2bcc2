package main

import (
	"bytes"
	"context"
	"flag"
	"regexp"
	"strings"
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

// TestHelpCommand checks that 'shareflow help NAME' prints each command's
// usage with every flag it has, and advertises no flag it lacks.
func TestHelpCommand(t *testing.T) {
	flagInSynopsis := regexp.MustCompile(`--([a-z][a-z-]*)`)
	for name, c := range commands {
		code, out, errOut := runArgs("help", name)
		assert.Equal(t, 0, code, name)
		assert.Empty(t, errOut, name)
		assert.True(t, strings.HasPrefix(out, "usage: shareflow "+name+" "+c.usage+"\n"), "%s:\n%s", name, out)
		assert.Contains(t, out, upperFirst(c.summary), name)

		fs := c.flagSet(context.Background())
		c.flags(fs)
		n := 0
		fs.VisitAll(func(f *flag.Flag) {
			n++
			assert.Regexp(t, "\n  --"+f.Name+"[ \n]", out, "%s help lists --%s", name, f.Name)
			assert.Contains(t, out, strings.ReplaceAll(f.Usage, "`", ""), "%s help explains --%s", name, f.Name)
		})
		assert.Positive(t, n, name)
		for _, m := range flagInSynopsis.FindAllStringSubmatch(c.usage, -1) {
			assert.NotNil(t, fs.Lookup(m[1]), "%s advertises --%s, which it does not have", name, m[1])
		}

		// -h prints the same, to the error output.
		code, hOut, hErr := runArgs(name, "-h")
		assert.Equal(t, 0, code, name)
		assert.Empty(t, hOut, name)
		assert.Equal(t, out, hErr, name)
	}

	_, out, _ := runArgs("help", "launch")
	assert.Contains(t, out, "--players names\n")
	assert.Contains(t, out, "(default 5s)")
	assert.Contains(t, out, "SIGTERM")
	_, out, _ = runArgs("help", "certs")
	assert.Contains(t, out, "  --force\n")
	assert.Contains(t, out, "ca-key.pem")

	code, _, errOut := runArgs("help", "certs", "launch")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unexpected argument "launch"`)
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
