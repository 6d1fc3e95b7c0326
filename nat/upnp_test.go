package nat

import (
	"bytes"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestParseSSDPCaptured(t *testing.T) {
	a, err := parseSSDPResponse(readTestdata(t, "miniupnpd-ssdp-response.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if a.st != igd2 || !strings.HasPrefix(a.location, "http://192.168.1.1:") || !strings.HasSuffix(a.location, "/rootDesc.xml") {
		t.Errorf("got %+v", a)
	}
	for name, b := range map[string]string{
		"not http":    "NOTIFY * HTTP/1.1\r\n\r\n",
		"404":         "HTTP/1.1 404 Not Found\r\nST: x\r\nLOCATION: http://192.0.2.1/\r\n\r\n",
		"no location": "HTTP/1.1 200 OK\r\nST: " + igd1 + "\r\n\r\n",
		"no st":       "HTTP/1.1 200 OK\r\nLOCATION: http://192.0.2.1/\r\n\r\n",
	} {
		if a, err := parseSSDPResponse([]byte(b)); err == nil {
			t.Errorf("%s: parsed %+v", name, a)
		}
	}
}

func TestGatewayURL(t *testing.T) {
	gw := netip.MustParseAddr("192.168.1.1")
	for raw, ok := range map[string]bool{
		"http://192.168.1.1:5000/rootDesc.xml": true,
		"http://192.168.1.1/ctl":               true,
		"https://192.168.1.1/ctl":              false,
		"http://192.168.1.2:5000/rootDesc.xml": false,
		"http://router.lan/rootDesc.xml":       false,
		"http://[::ffff:192.168.1.1]:80/x":     true,
		"::":                                   false,
	} {
		if _, err := gatewayURL(raw, gw); (err == nil) != ok {
			t.Errorf("gatewayURL(%q): %v, want ok %v", raw, err, ok)
		}
	}
}

func TestParseDescriptionCaptured(t *testing.T) {
	gw := netip.MustParseAddr("192.168.1.1")
	loc, _ := url.Parse("http://192.168.1.1:34009/rootDesc.xml")
	dev, err := parseDescription(bytes.NewReader(readTestdata(t, "miniupnpd-rootDesc.xml")), gw, loc)
	if err != nil {
		t.Fatal(err)
	}
	if dev.version != 2 || dev.serviceType != "urn:schemas-upnp-org:service:WANIPConnection:2" || dev.control.String() != "http://192.168.1.1:34009/ctl/IPConn" {
		t.Errorf("got %+v (control %v)", dev, dev.control.String())
	}
	// The same description served from elsewhere is not the gateway's.
	other := netip.MustParseAddr("192.168.1.7")
	if _, err := parseDescription(bytes.NewReader(readTestdata(t, "miniupnpd-rootDesc.xml")), other, loc); err == nil {
		t.Error("accepted control URLs on another host")
	}
}

// FuzzParseSSDPResponse: no panic, and an accepted answer has both fields.
func FuzzParseSSDPResponse(f *testing.F) {
	f.Add(readTestdata(f, "miniupnpd-ssdp-response.txt"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: " + igd1 + "\r\nLocation: http://192.168.1.1:1/x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseSSDPResponse(b)
		if err == nil && (a.st == "" || a.location == "") {
			t.Fatalf("accepted %+v", a)
		}
	})
}

// FuzzParseDescription: no panic, and an accepted device's control URL is
// always on the gateway.
func FuzzParseDescription(f *testing.F) {
	f.Add(readTestdata(f, "miniupnpd-rootDesc.xml"))
	gw := netip.MustParseAddr("192.168.1.1")
	loc, _ := url.Parse("http://192.168.1.1:34009/rootDesc.xml")
	f.Fuzz(func(t *testing.T, b []byte) {
		dev, err := parseDescription(bytes.NewReader(b), gw, loc)
		if err != nil {
			return
		}
		if _, err := gatewayURL(dev.control.String(), gw); err != nil {
			t.Fatalf("control URL %v: %v", dev.control.String(), err)
		}
	})
}
