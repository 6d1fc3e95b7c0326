package natlab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ifaceNames lists the interfaces of the namespace the calling thread is in.
func ifaceNames() []string {
	ifs, _ := net.Interfaces()
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}

func TestDoEntersAndLeaves(t *testing.T) {
	lab := New(t, Config{})
	var inside []string
	if err := lab.Do(Router, func() error {
		inside = ifaceNames()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(inside, ","); got != "lo,lan,lan1,lan2,wan" {
		t.Errorf("interfaces in Router = %s, want lo,lan,lan1,lan2,wan", got)
	}
	for _, n := range ifaceNames() {
		if n == "lan1" || n == "wan" {
			t.Errorf("interface %s visible after Do: the namespace leaked into the test's thread", n)
		}
	}
	// Do returns fn's error.
	if err := lab.Do(LAN1, func() error { return os.ErrClosed }); err != os.ErrClosed {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	// A socket keeps its namespace after Do.
	ln, err := lab.Listen(LAN1, "tcp4", netip.AddrPortFrom(lab.Addr(LAN1), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := net.Dial("tcp4", ln.Addr().String()); err == nil {
		t.Error("the test's own namespace reached a LAN address of the lab")
	}
}

func TestCommandRunsInHost(t *testing.T) {
	lab := New(t, Config{Kind: DoubleNAT, SiteB: NoNAT})
	for _, h := range lab.Hosts() {
		out, err := lab.Command(h, "ip", "-4", "-o", "addr", "show").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", h, err, out)
		}
		for _, a := range lab.Addrs(h) {
			if !strings.Contains(string(out), " "+a.String()+"/") {
				t.Errorf("%v does not have %v:\n%s", h, a, out)
			}
		}
	}
	if lab.Addr(Router) != netip.MustParseAddr("100.64.0.2") || lab.Addr(CGN) != lab.PublicAddr() {
		t.Errorf("DoubleNAT: Router %v, CGN %v, public %v", lab.Addr(Router), lab.Addr(CGN), lab.PublicAddr())
	}
	if lab.SiteBPublicAddr() != lab.Addr(SiteBLAN) {
		t.Errorf("NoNAT site B: public %v, want SiteBLAN's own %v", lab.SiteBPublicAddr(), lab.Addr(SiteBLAN))
	}
}

func TestStartKilledAtCleanup(t *testing.T) {
	var pid int
	t.Run("lab", func(t *testing.T) {
		lab := New(t, Config{})
		c, err := lab.Start(Peer, "sleep", "300")
		if err != nil {
			t.Fatal(err)
		}
		pid = c.Process.Pid
	})
	if pid == 0 {
		t.Skip("the lab was skipped")
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("process %d still running after the lab's cleanup", pid)
	}
}

func TestSweepRemovesStaleLabs(t *testing.T) {
	// A process that is gone: its PID names a stale lab.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Skip("cannot run true:", err)
	}
	dead := c.Process.Pid
	if _, running := procStart(dead); running {
		t.Skipf("PID %d already reused", dead)
	}
	_ = New(t, Config{}) // skips when not root
	myStart, _ := procStart(os.Getpid())
	names := map[string]bool{ // name: should survive the sweep
		namePrefix + itoa(dead) + "-1-lan1":                                                  false, // older format
		namePrefix + itoa(dead) + "-2n9c-1-lan1":                                             false,
		namePrefix + itoa(os.Getpid()) + "-" + strconv.FormatUint(myStart+1, 36) + "-1-lan1": false, // reused PID
		labPrefix() + "999999-lan1":                                                          true,  // this process's
		"hplx-unrelated-" + itoa(os.Getpid()):                                                true,
	}
	var stale string
	for n, survives := range names {
		if err := runIP("", "netns add "+n+"\n"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = runIP("", "netns del "+n+"\n") })
		if !survives {
			stale = n
		}
	}

	// A process left running in the stale namespace is killed.
	orphan := exec.Command("ip", "netns", "exec", stale, "sleep", "300")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() {
		_ = orphan.Wait()
		close(waited)
	}()
	t.Cleanup(func() {
		_ = orphan.Process.Kill()
		<-waited
	})
	// Wait until it runs in the namespace, so that the sweep can see it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		out, _ := exec.Command("ip", "netns", "pids", stale).Output()
		if len(strings.TrimSpace(string(out))) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("process never appeared in the stale namespace")
		}
		time.Sleep(5 * time.Millisecond)
	}

	_ = New(t, Config{}) // sweeps before building
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("process in the stale namespace survived the sweep")
	}
	for n, survives := range names {
		if exists(n) != survives {
			t.Errorf("namespace %s: exists %v after the sweep, want %v", n, exists(n), survives)
		}
	}
}

func exists(ns string) bool {
	_, err := os.Stat("/run/netns/" + ns)
	return err == nil
}

func TestMissingHost(t *testing.T) {
	lab := New(t, Config{}) // no CGN, no site B
	if err := lab.Do(CGN, func() error { return nil }); err == nil || !strings.Contains(err.Error(), "no host CGN") {
		t.Errorf("Do in a missing host: %v", err)
	}
	if err := lab.Command(SiteBLAN, "true").Run(); err == nil {
		t.Error("Command in a missing host ran")
	}
	if _, err := lab.Start(SiteBLAN, "true"); err == nil {
		t.Error("Start in a missing host started")
	}
	if _, err := lab.ListenPacket(SiteBRouter, "udp4", ":0"); err == nil {
		t.Error("ListenPacket in a missing host succeeded")
	}
}

func TestDebug(t *testing.T) {
	lab := New(t, Config{Kind: AddressRestricted, SiteB: DoubleNAT})
	s := udpListen(t, lab, Server, lab.Addr(Server))
	c := udpListen(t, lab, LAN1, netip.Addr{})
	m := mappingOf(t, c, s)
	d := lab.Debug()
	for _, want := range []string{"==== Router", "==== SiteBRouter", "==== SiteBCGN", "table ip natlab", "udpseen",
		fmt.Sprintf("%d . %v", m.Port(), lab.Addr(Server))} {
		if !strings.Contains(d, want) {
			t.Errorf("Debug lacks %q:\n%s", want, d)
		}
	}
	if strings.Contains(d, "==== CGN") {
		t.Errorf("Debug shows a CGN the lab does not have:\n%s", d)
	}
}
