// Command ubus-broker is a development and test stand-in for OpenWrt's
// ubusd, for hosts where ubusd cannot be installed. It is not installed on
// routers.
//
//	ubus-broker -s SOCKET
package main

import (
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/aredn/phonebookd/ubus/broker"
)

func main() {
	sock := flag.String("s", "/var/run/ubus/ubus.sock", "socket to listen on")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	b, err := broker.Start(*sock, log)
	if err != nil {
		log.Error("start", "err", err)
		os.Exit(1)
	}
	log.Info("ubus broker listening", "socket", *sock)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	b.Close()
}
