package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/hairpin-go/hairpin/examples/internal/config"
)

// printQuickstart tells a newcomer running the built-in default what to try.
func printQuickstart(w io.Writer, cfg *config.File) {
	var b strings.Builder
	b.WriteString("\nhairpin gateway is running on loopback with its built-in demo configuration. Try:\n\n")
	host := "blog.example.com"
	if cfg.Demo != nil && len(cfg.Demo.Names) > 0 {
		host = cfg.Demo.Names[0]
	}
	if cfg.DNS != nil && len(cfg.DNS.Listen) > 0 {
		ip, port := split(cfg.DNS.Listen[0])
		fmt.Fprintf(&b, "  dig @%s -p %s %s              # inside view: the LAN address\n", ip, port, host)
		fmt.Fprintf(&b, "  dig @%s -p %s -b 127.0.0.2 %s # outside view: the public address\n", ip, port, host)
	}
	if cfg.Proxy != nil {
		if len(cfg.Proxy.TLS) > 0 {
			ip, port := split(cfg.Proxy.TLS[0])
			fmt.Fprintf(&b, "  openssl s_client -connect %s:%s -servername %s </dev/null | head -3\n", ip, port, host)
			fmt.Fprintf(&b, "  curl -k --resolve %s:%s:%s https://%s:%s/\n", host, port, ip, host, port)
		}
		if len(cfg.Proxy.HTTP) > 0 {
			ip, port := split(cfg.Proxy.HTTP[0])
			fmt.Fprintf(&b, "  curl --resolve %s:%s:%s http://%s:%s/\n", host, port, ip, host, port)
		}
	}
	if cfg.Relay != nil && len(cfg.Relay.Listen) > 0 {
		ip, port := split(cfg.Relay.Listen[0])
		fmt.Fprintf(&b, "  turnutils_uclient -p %s -W %s -u demo -y %s   # TURN relay (coturn's client)\n", port, secret(cfg), ip)
	}
	if cfg.Metrics != "" {
		fmt.Fprintf(&b, "  curl http://%s/metrics\n", cfg.Metrics)
	}
	b.WriteString("\nPrint this configuration with -print-default-config, edit it, and run with -config FILE.\n\n")
	io.WriteString(w, b.String())
}

func split(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return addr, ""
	}
	return strings.Trim(addr[:i], "[]"), addr[i+1:]
}

func secret(cfg *config.File) string {
	if cfg.Relay.Secret != "" {
		return cfg.Relay.Secret
	}
	if len(cfg.Relay.Secrets) > 0 {
		return cfg.Relay.Secrets[0]
	}
	return "SECRET"
}
