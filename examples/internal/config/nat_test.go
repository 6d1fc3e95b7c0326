package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestNATSection(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error; none means valid
	}{
		{"minimal", "nat:\n  stun: [stun.example.net]\n", nil},
		{"full", `nat:
  stun: ["stun.example.net:3478", "198.51.100.10:3478", "[2001:db8::1]:3478"]
  public: 203.0.113.7
  interval: 10m
  hairpin: false
  tcp: true
  timeout: 3s
  ipv6: false
  server:
    primary: 192.0.2.1:3478
    alternate: 192.0.2.2:3479
    rateLimit: 100
`, nil},
		{"public only", "nat:\n  public: 203.0.113.7\n", nil},
		{"nothing", "nat:\n  interval: 5m\n", []string{"line 1", "nat.stun", "at least one"}},
		{"bad server port", "nat:\n  stun: [\"a.example:0\", \"ok.example\"]\n", []string{"line 2", "nat.stun[0]", "bad port"}},
		{"bad host", "nat:\n  stun:\n    - ok.example\n    - \"bad host:3478\"\n", []string{"line 4", "nat.stun[1]"}},
		{"bad public", "nat:\n  stun: [s.example]\n  public: 0.0.0.0\n", []string{"line 3", "nat.public"}},
		{"bad interval", "nat:\n  stun: [s.example]\n  interval: 1s\n", []string{"line 3", "nat.interval", "between"}},
		{"interval not a duration", "nat:\n  stun: [s.example]\n  interval: often\n", []string{"nat.interval", "want a positive duration"}},
		{"bad timeout", "nat:\n  stun: [s.example]\n  timeout: 2h\n", []string{"nat.timeout"}},
		{"unknown key", "nat:\n  stun: [s.example]\n  stunn: []\n", []string{"line 3", "stunn"}},
		{"alternate same IP", "nat:\n  stun: [s.example]\n  server:\n    primary: 192.0.2.1:3478\n    alternate: 192.0.2.1:3479\n",
			[]string{"line 5", "nat.server.alternate", "both IP and port"}},
		{"bad primary", "nat:\n  stun: [s.example]\n  server:\n    primary: nowhere\n", []string{"line 4", "nat.server.primary"}},
		{"bad rate", "nat:\n  stun: [s.example]\n  server:\n    primary: 192.0.2.1:3478\n    rateLimit: -5\n", []string{"nat.server.rateLimit"}},
		{"port mapping", "nat:\n  stun: [s.example]\n  portMapping: auto\n  mapPorts: [tcp/443, udp/3478, udp/50000-50015]\n", nil},
		{"port mapping off", "nat:\n  stun: [s.example]\n  portMapping: \"off\"\n", nil},
		{"port mapping typo", "nat:\n  stun: [s.example]\n  portMapping: yes\n", []string{"line 3", "nat.portMapping", `want "auto" or "off"`}},
		{"bad map port", "nat:\n  stun: [s.example]\n  portMapping: auto\n  mapPorts:\n    - tcp/443\n    - sctp/9\n", []string{"line 6", "nat.mapPorts[1]", "sctp/9", "want tcp or udp"}},
		{"map port range backwards", "nat:\n  stun: [s.example]\n  portMapping: auto\n  mapPorts: [udp/50010-50000]\n", []string{"nat.mapPorts[0]", "FIRST-LAST"}},
		{"map port zero", "nat:\n  stun: [s.example]\n  portMapping: auto\n  mapPorts: [tcp/0]\n", []string{"nat.mapPorts[0]"}},
		{"too many map ports", "nat:\n  stun: [s.example]\n  portMapping: auto\n  mapPorts: [udp/40000-49999]\n", []string{"nat.mapPorts", "10000 ports", "at most 256"}},
		{"map ports without auto", "nat:\n  stun: [s.example]\n  mapPorts: [tcp/443]\n", []string{"line 3", "nat.mapPorts", "needs nat.portMapping: auto"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNATBuild(t *testing.T) {
	f, err := Parse([]byte("nat:\n  stun: [a.example, \"198.51.100.10:3478\"]\n  hairpin: false\n  tcp: true\n  timeout: 2s\n  server:\n    primary: 192.0.2.1:3478\n    alternate: 192.0.2.2:3479\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := f.NAT.Client(nil)
	if c == nil || len(c.Servers) != 2 || !c.NoHairpin || !c.TCP || c.Timeout != 2*time.Second || c.Network != "" {
		t.Errorf("client %+v", c)
	}
	if f.NAT.ProbeInterval() != 5*time.Minute {
		t.Errorf("default interval %v", f.NAT.ProbeInterval())
	}
	if _, ok := f.NAT.PublicAddr(); ok {
		t.Error("PublicAddr set without nat.public")
	}
	s := f.NAT.STUNServer(nil)
	if s == nil || s.Primary.String() != "192.0.2.1:3478" || s.Alternate.String() != "192.0.2.2:3479" {
		t.Errorf("server %+v", s)
	}
	f, err = Parse([]byte("nat:\n  public: 203.0.113.7\n  interval: 1m\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := f.NAT.PublicAddr(); !ok || a.String() != "203.0.113.7" || f.NAT.Client(nil) != nil || f.NAT.ProbeInterval() != time.Minute {
		t.Errorf("public-only section: %v %v", a, ok)
	}
}

func TestNATMapPortList(t *testing.T) {
	f, err := Parse([]byte("nat:\n  stun: [s.example]\n  portMapping: auto\n  mapPorts: [tcp/443, udp/50000-50002]\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range f.NAT.MapPortList() {
		got = append(got, fmt.Sprintf("%v/%d", p.Transport, p.Port))
	}
	if want := "tcp/443 udp/50000 udp/50001 udp/50002"; strings.Join(got, " ") != want || !f.NAT.MapAuto() {
		t.Errorf("MapPortList %v (auto %v), want %s", got, f.NAT.MapAuto(), want)
	}
}
