//go:build !noubus

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/aredn/phonebookd/page"
	"github.com/aredn/phonebookd/ubus"
	"github.com/aredn/phonebookd/uci"
)

// defaultSocket is ubusd's socket on OpenWrt.
const defaultSocket = ubus.DefaultSocket

// runUbusCommand runs a ubus client subcommand: call, list, page, cgi.
func runUbusCommand(name string, args []string) int {
	cli := &ubus.CLI{Stdout: os.Stdout, Stderr: os.Stderr}
	switch name {
	case "call":
		return cli.Call(args)
	case "list":
		return cli.List(args)
	case "page":
		return runPage(args)
	}
	return runCGI(args)
}

// runPage writes the AREDN app page as a CGI response.
func runPage(args []string) int {
	fs := flag.NewFlagSet("page", flag.ContinueOnError)
	sock := fs.String("s", ubus.DefaultSocket, "ubusd socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := page.Render(os.Stdout, page.Collect(ctx, *sock)); err != nil {
		return 1
	}
	return 0
}

// runCGI serves a CGI document: healthcheck.
func runCGI(args []string) int {
	if len(args) == 0 || args[0] != "healthcheck" {
		fmt.Fprintln(os.Stderr, "usage: phonebookd cgi healthcheck [-s SOCKET] [-c CONFDIR] [-t SAVEDIR]")
		return 2
	}
	fs := flag.NewFlagSet("cgi", flag.ContinueOnError)
	sock := fs.String("s", ubus.DefaultSocket, "ubusd socket")
	confDir := fs.String("c", "/etc/config", "UCI configuration directory")
	saveDir := fs.String("t", "/tmp/.uci", "UCI save directory")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	page.Healthcheck(os.Stdout, page.HealthcheckOptions{Socket: *sock, Store: uci.Store{ConfDir: *confDir, SaveDir: *saveDir}})
	return 0
}
