// Command player stands for an example's player in the tests of package
// multihosttest: it says who it is, then exits with --exit's status, or
// with --hang waits until it is killed.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	config := flag.String("config", "", "hostmap")
	player := flag.String("player", "", "player")
	exit := flag.Int("exit", 0, "exit status")
	hang := flag.Bool("hang", false, "wait until killed")
	flag.Parse()
	fmt.Printf("player %s of %s\n", *player, *config)
	fmt.Fprintf(os.Stderr, "%s: ready\n", *player)
	if *hang {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM)
		<-stop
	}
	os.Exit(*exit)
}
