package nat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/soap"
)

// UPnP IGD over SSDP (discovery) and SOAP (control). goupnp supplies the
// device description types and the SOAP envelope; the SSDP search and the
// HTTP client are ours, so that every socket goes through PortMapper's Dial
// and ListenPacket and nothing touches goupnp's package-level HTTP client.
const (
	ssdpAddr = "239.255.255.250:1900"
	ssdpPort = 1900
	igd1     = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
	igd2     = "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
	// ssdpResend is the interval between M-SEARCH retransmissions (UDP,
	// lossy: UPnP asks for several sends).
	ssdpResend = time.Second
	// ssdpGrace is how long to wait for an IGD:2 answer once an IGD:1
	// answer arrived: a v2 device answers both searches at once.
	ssdpGrace = 300 * time.Millisecond
	// maxDescription bounds the device description read (miniupnpd's is
	// about 4 KB; real routers' stay well under 64 KB).
	maxDescription = 256 << 10
	// maxUPnPLease is the longest lease IGD v2 allows (one week).
	maxUPnPLease = 604800
)

// wanServices are the connection services that can map ports, best first.
var wanServices = []string{
	"urn:schemas-upnp-org:service:WANIPConnection:2",
	"urn:schemas-upnp-org:service:WANIPConnection:1",
	"urn:schemas-upnp-org:service:WANPPPConnection:1",
}

// upnpDevice is a discovered IGD's connection service.
type upnpDevice struct {
	gateway     netip.Addr
	location    string
	version     int // IGD version, 1 or 2
	serviceType string
	control     url.URL
}

// ssdpAnswer is what an SSDP search response says.
type ssdpAnswer struct {
	st       string
	location string
}

// parseSSDPResponse parses one SSDP search response (an HTTP response over
// UDP) and returns its ST and LOCATION.
func parseSSDPResponse(b []byte) (ssdpAnswer, error) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return ssdpAnswer{}, fmt.Errorf("ssdp: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ssdpAnswer{}, fmt.Errorf("ssdp: status %q", resp.Status)
	}
	a := ssdpAnswer{st: resp.Header.Get("St"), location: resp.Header.Get("Location")}
	if a.st == "" || a.location == "" {
		return ssdpAnswer{}, errors.New("ssdp: response without ST or LOCATION")
	}
	return a, nil
}

// gatewayURL parses raw and checks that it points at gw over http: a
// description or control URL elsewhere would let any LAN host that answers
// SSDP steer our requests.
func gatewayURL(raw string, gw netip.Addr) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("URL %q: not http", raw)
	}
	h, err := netip.ParseAddr(u.Hostname())
	if err != nil || h.Unmap() != gw {
		return nil, fmt.Errorf("URL %q: not on the gateway %v", raw, gw)
	}
	return u, nil
}

func msearch(st string) []byte {
	return []byte("M-SEARCH * HTTP/1.1\r\nHOST: " + ssdpAddr + "\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: " + st + "\r\n\r\n")
}

// upnpDiscover finds the gateway's IGD: an SSDP search (multicast, and
// unicast to the gateway), answers only from the gateway, then its device
// description.
func (m *PortMapper) upnpDiscover(ctx context.Context, gw netip.Addr) (*upnpDevice, error) {
	pc, err := m.listenPacket(ctx, "udp4", ":0")
	if err != nil {
		return nil, fmt.Errorf("ssdp: %w", err)
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { _ = pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	dsts := []net.Addr{
		net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ssdpAddr)),
		net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, ssdpPort)),
	}
	send := func() {
		for _, st := range []string{igd2, igd1} {
			for _, d := range dsts {
				_, _ = pc.WriteTo(msearch(st), d)
			}
		}
	}
	send()
	nextSend := time.Now().Add(ssdpResend)
	var best ssdpAnswer
	var graceEnd time.Time
	buf := make([]byte, 2048)
	for best.st != igd2 {
		wake := nextSend
		if !graceEnd.IsZero() && graceEnd.Before(wake) {
			wake = graceEnd
		}
		if ctx.Err() == nil {
			_ = pc.SetReadDeadline(wake)
		}
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return nil, fmt.Errorf("ssdp: %w", err)
			}
			if !graceEnd.IsZero() && !time.Now().Before(graceEnd) {
				break
			}
			if !time.Now().Before(nextSend) {
				send()
				nextSend = time.Now().Add(ssdpResend)
			}
			continue
		}
		src, ok := from.(*net.UDPAddr)
		if !ok || src.AddrPort().Addr().Unmap() != gw {
			continue // only the gateway's answers count
		}
		a, err := parseSSDPResponse(buf[:n])
		if err != nil || (a.st != igd1 && a.st != igd2) {
			continue
		}
		if _, err := gatewayURL(a.location, gw); err != nil {
			continue
		}
		if best.st == "" && graceEnd.IsZero() {
			graceEnd = time.Now().Add(ssdpGrace)
		}
		if best.st != igd2 {
			best = a
		}
	}
	if best.st == "" {
		return nil, fmt.Errorf("ssdp: no IGD answered from %v: %w", gw, ctx.Err())
	}
	return m.upnpDescribe(ctx, gw, best.location)
}

// httpClient returns a client whose connections go through m.dial, never
// kept alive (no idle connection outlives a call), without redirects.
func (m *PortMapper) httpClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:       m.dial,
			DisableKeepAlives: true,
			Proxy:             nil,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// upnpDescribe fetches and reads the device description at location.
func (m *PortMapper) upnpDescribe(ctx context.Context, gw netip.Addr, location string) (*upnpDevice, error) {
	loc, err := gatewayURL(location, gw)
	if err != nil {
		return nil, fmt.Errorf("upnp: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("upnp: %w", err)
	}
	resp, err := m.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("upnp: device description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("upnp: device description %s: status %q", location, resp.Status)
	}
	return parseDescription(io.LimitReader(resp.Body, maxDescription), gw, loc)
}

// parseDescription reads an IGD device description and picks its best
// connection service.
func parseDescription(r io.Reader, gw netip.Addr, loc *url.URL) (*upnpDevice, error) {
	var root goupnp.RootDevice
	d := xml.NewDecoder(r)
	d.DefaultSpace = goupnp.DeviceXMLNamespace
	if err := d.Decode(&root); err != nil {
		return nil, fmt.Errorf("upnp: device description %s: %w", loc, err)
	}
	base := loc
	if root.URLBaseStr != "" {
		u, err := gatewayURL(root.URLBaseStr, gw)
		if err != nil {
			return nil, fmt.Errorf("upnp: device description %s: URLBase: %w", loc, err)
		}
		base = u
	}
	root.SetURLBase(base)
	dev := &upnpDevice{gateway: gw, location: loc.String(), version: 1}
	if strings.HasPrefix(root.Device.DeviceType, "urn:schemas-upnp-org:device:InternetGatewayDevice:") {
		if v, err := strconv.Atoi(strings.TrimPrefix(root.Device.DeviceType, "urn:schemas-upnp-org:device:InternetGatewayDevice:")); err == nil && v >= 1 {
			dev.version = v
		}
	}
	for _, st := range wanServices {
		for _, svc := range root.Device.FindService(st) {
			if !svc.ControlURL.Ok {
				continue
			}
			if _, err := gatewayURL(svc.ControlURL.URL.String(), gw); err != nil {
				continue
			}
			dev.serviceType = st
			dev.control = svc.ControlURL.URL
			return dev, nil
		}
	}
	return nil, fmt.Errorf("upnp: device description %s: no WANIPConnection or WANPPPConnection service on the gateway", loc)
}

// upnpErrorName names the UPnP IGD error codes a mapping request can get.
func upnpErrorName(code int) string {
	switch code {
	case 402:
		return "Invalid Args"
	case 501:
		return "Action Failed"
	case 606:
		return "Action not authorized"
	case 714:
		return "NoSuchEntryInArray"
	case 715:
		return "WildCardNotPermittedInSrcIP"
	case 716:
		return "WildCardNotPermittedInExtPort"
	case 718:
		return "ConflictInMappingEntry"
	case 724:
		return "SamePortValuesRequired"
	case 725:
		return "OnlyPermanentLeasesSupported"
	case 726:
		return "RemoteHostOnlySupportsWildcard"
	case 727:
		return "ExternalPortOnlySupportsWildcard"
	case 728:
		return "NoPortMapsAvailable"
	case 729:
		return "ConflictWithOtherMechanisms"
	}
	return "error"
}

// soapCall performs action on dev's connection service. A SOAP fault becomes
// a *PortMapError with the UPnP error code.
func (m *PortMapper) soapCall(ctx context.Context, dev *upnpDevice, action string, in, out any) error {
	c := soap.SOAPClient{EndpointURL: dev.control, HTTPClient: *m.httpClient()}
	err := c.PerformActionCtx(ctx, dev.serviceType, action, in, out)
	var fault *soap.SOAPFaultError
	if errors.As(err, &fault) {
		code := fault.Detail.UPnPError.Errorcode
		reason := fault.Detail.UPnPError.ErrorDescription
		if reason == "" {
			reason = upnpErrorName(code)
		}
		return &PortMapError{Protocol: PortMapUPnP, Code: code, Reason: action + ": " + reason}
	}
	if err != nil {
		return fmt.Errorf("upnp: %s: %w", action, err)
	}
	return nil
}

// upnpExternal asks the IGD for its external address.
func (m *PortMapper) upnpExternal(ctx context.Context, dev *upnpDevice) (netip.Addr, error) {
	var out struct{ NewExternalIPAddress string }
	if err := m.soapCall(ctx, dev, "GetExternalIPAddress", nil, &out); err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(strings.TrimSpace(out.NewExternalIPAddress))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("upnp: GetExternalIPAddress: %q: %w", out.NewExternalIPAddress, err)
	}
	return a.Unmap(), nil
}

type upnpMapArgs struct {
	NewRemoteHost             string
	NewExternalPort           string
	NewProtocol               string
	NewInternalPort           string
	NewInternalClient         string
	NewEnabled                string
	NewPortMappingDescription string
	NewLeaseDuration          string
}

// upnpMap adds (or, for an existing mapping of ours, refreshes) a mapping.
// With IGD v2 and no external port asked for, AddAnyPortMapping lets the
// router pick a free one.
func (m *PortMapper) upnpMap(ctx context.Context, dev *upnpDevice, local netip.Addr, t Transport, internal, external uint16, lifetime time.Duration, renewal bool) (Mapping, error) {
	lease := min(lifetimeSeconds(lifetime), maxUPnPLease)
	args := upnpMapArgs{
		NewProtocol:               strings.ToUpper(t.String()),
		NewInternalPort:           strconv.Itoa(int(internal)),
		NewInternalClient:         local.String(),
		NewEnabled:                "1",
		NewPortMappingDescription: m.description(),
	}
	add := func(lease uint32) (uint16, error) {
		args.NewLeaseDuration = strconv.FormatUint(uint64(lease), 10)
		if external == 0 && dev.version >= 2 && !renewal {
			args.NewExternalPort = strconv.Itoa(int(internal))
			var out struct{ NewReservedPort string }
			if err := m.soapCall(ctx, dev, "AddAnyPortMapping", &args, &out); err != nil {
				return 0, err
			}
			p, err := strconv.ParseUint(strings.TrimSpace(out.NewReservedPort), 10, 16)
			if err != nil || p == 0 {
				return 0, fmt.Errorf("upnp: AddAnyPortMapping: reserved port %q", out.NewReservedPort)
			}
			return uint16(p), nil
		}
		ext := external
		if ext == 0 {
			ext = internal
		}
		args.NewExternalPort = strconv.Itoa(int(ext))
		return ext, m.soapCall(ctx, dev, "AddPortMapping", &args, nil)
	}
	port, err := add(lease)
	var pe *PortMapError
	if errors.As(err, &pe) && pe.Code == 725 {
		lease = 0 // OnlyPermanentLeasesSupported: ask for a permanent one
		port, err = add(0)
	}
	if err != nil {
		return Mapping{}, err
	}
	got := Mapping{
		Protocol:  PortMapUPnP,
		Transport: t,
		Internal:  netip.AddrPortFrom(local, internal),
		External:  netip.AddrPortFrom(netip.Addr{}, port),
		Lifetime:  time.Duration(lease) * time.Second,
	}
	if ext, err := m.upnpExternal(ctx, dev); err == nil && ext.IsValid() && !ext.IsUnspecified() {
		got.External = netip.AddrPortFrom(ext, port)
	}
	return got, nil
}

// upnpDelete deletes our mapping of external port.
func (m *PortMapper) upnpDelete(ctx context.Context, dev *upnpDevice, t Transport, external uint16) error {
	args := struct {
		NewRemoteHost   string
		NewExternalPort string
		NewProtocol     string
	}{"", strconv.Itoa(int(external)), strings.ToUpper(t.String())}
	return m.soapCall(ctx, dev, "DeletePortMapping", &args, nil)
}
