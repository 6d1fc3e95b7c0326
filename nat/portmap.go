package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// ErrNoPortMapping is returned (wrapped, joined with each protocol's own
// error) when no port-mapping protocol of the router answered.
var ErrNoPortMapping = errors.New("nat: the router answers no port-mapping protocol")

// ErrPublicAddress is returned when this host's own address towards the
// gateway is public: a port mapping there would open the host itself to the
// internet, which is never done on the caller's behalf.
var ErrPublicAddress = errors.New("nat: refusing to map ports: our own address is public")

// ErrPortMapperClosed is returned by Map after Close.
var ErrPortMapperClosed = errors.New("nat: port mapper closed")

// Defaults, and why.
const (
	// DefaultMappingLifetime is the lifetime asked for when Map gets zero:
	// the lifetime RFC 6886 recommends (two hours). Mappings are renewed
	// long before it ends, so a crashed host's mappings disappear by
	// themselves within two hours.
	DefaultMappingLifetime = 2 * time.Hour
	// defaultPortMapTimeout bounds one protocol's exchange. A router on the
	// LAN answers in milliseconds; the retransmissions (250 ms, doubling)
	// fit four tries in it.
	defaultPortMapTimeout = 3 * time.Second
	// minRenew floors the renewal interval, so that a router granting a
	// lifetime of a second or two is not asked in a busy loop.
	minRenew = time.Second
	// retryRenew is the pause after a failed renewal: a restarting router
	// is back within seconds, and a lost mapping should come back soon.
	retryRenew = 2 * time.Second
	// closeTimeout bounds the deletion of every mapping in Close.
	closeTimeout = 5 * time.Second
	// pcpPort is the PCP and NAT-PMP server port (RFC 6887, RFC 6886).
	pcpPort = 5351
)

// PortMapProtocol names a router port-mapping protocol.
type PortMapProtocol uint8

const (
	// PortMapUnknown is the zero value: no protocol.
	PortMapUnknown PortMapProtocol = iota
	// PortMapPCP is the Port Control Protocol (RFC 6887), version 2.
	PortMapPCP
	// PortMapNATPMP is NAT Port Mapping Protocol (RFC 6886).
	PortMapNATPMP
	// PortMapUPnP is UPnP Internet Gateway Device v1 or v2 (SSDP and SOAP).
	PortMapUPnP
)

// String returns "PCP", "NAT-PMP", "UPnP IGD" or "unknown".
func (p PortMapProtocol) String() string {
	switch p {
	case PortMapPCP:
		return "PCP"
	case PortMapNATPMP:
		return "NAT-PMP"
	case PortMapUPnP:
		return "UPnP IGD"
	case PortMapUnknown:
		return "unknown"
	}
	return fmt.Sprintf("PortMapProtocol(%d)", uint8(p))
}

// MarshalText encodes p as "pcp", "nat-pmp", "upnp" or "unknown".
func (p PortMapProtocol) MarshalText() ([]byte, error) {
	switch p {
	case PortMapPCP:
		return []byte("pcp"), nil
	case PortMapNATPMP:
		return []byte("nat-pmp"), nil
	case PortMapUPnP:
		return []byte("upnp"), nil
	case PortMapUnknown:
		return []byte("unknown"), nil
	}
	return nil, fmt.Errorf("nat: unknown port-mapping protocol %d", uint8(p))
}

// UnmarshalText decodes what MarshalText encodes (also "natpmp", "upnp-igd").
func (p *PortMapProtocol) UnmarshalText(b []byte) error {
	switch string(b) {
	case "pcp", "PCP":
		*p = PortMapPCP
	case "nat-pmp", "natpmp", "NAT-PMP":
		*p = PortMapNATPMP
	case "upnp", "upnp-igd", "UPnP", "UPnP IGD":
		*p = PortMapUPnP
	case "unknown", "":
		*p = PortMapUnknown
	default:
		return fmt.Errorf("nat: port-mapping protocol %q: want pcp, nat-pmp or upnp", b)
	}
	return nil
}

// Transport is the transport protocol of a port mapping.
type Transport uint8

const (
	// TransportUnknown is the zero value; Map refuses it.
	TransportUnknown Transport = iota
	// TransportUDP maps a UDP port.
	TransportUDP
	// TransportTCP maps a TCP port.
	TransportTCP
)

// String returns "udp", "tcp" or "unknown".
func (t Transport) String() string {
	switch t {
	case TransportUDP:
		return "udp"
	case TransportTCP:
		return "tcp"
	case TransportUnknown:
		return "unknown"
	}
	return fmt.Sprintf("Transport(%d)", uint8(t))
}

// MarshalText encodes t as its String.
func (t Transport) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText decodes "udp" or "tcp".
func (t *Transport) UnmarshalText(b []byte) error {
	switch string(b) {
	case "udp", "UDP":
		*t = TransportUDP
	case "tcp", "TCP":
		*t = TransportTCP
	case "unknown", "":
		*t = TransportUnknown
	default:
		return fmt.Errorf("nat: transport %q: want udp or tcp", b)
	}
	return nil
}

// Mapping is a port mapping the router granted.
type Mapping struct {
	// Protocol is the protocol that created the mapping.
	Protocol PortMapProtocol
	// Transport is UDP or TCP.
	Transport Transport
	// Internal is this host's address and port the router forwards to.
	Internal netip.AddrPort
	// External is the router's public address and the port it forwards.
	// The address is invalid when the router did not say it (a UPnP router
	// whose GetExternalIPAddress failed).
	External netip.AddrPort
	// Lifetime is the lifetime the router granted at the last renewal;
	// zero for a UPnP router that grants only permanent mappings.
	Lifetime time.Duration
	// Expires is when the mapping ends unless renewed (zero: permanent).
	Expires time.Time
	// Gateway is the router that holds the mapping.
	Gateway netip.Addr
}

// PortMappingReport says which port-mapping protocols the router answers.
// Empty fields mean "did not answer" (or "not asked").
type PortMappingReport struct {
	// Gateway is the router that was asked.
	Gateway netip.Addr
	// Local is this host's address towards the gateway.
	Local netip.Addr
	// PCP, NATPMP and UPnP say whether each protocol answered.
	PCP, NATPMP, UPnP bool
	// UPnPVersion is the Internet Gateway Device version (1 or 2) when
	// UPnP answered.
	UPnPVersion int
	// UPnPLocation is the device description URL the gateway announced.
	UPnPLocation string
	// External is the public address the router reports (from the first
	// protocol that said it), and ExternalFrom that protocol.
	External     netip.Addr
	ExternalFrom PortMapProtocol
	// Errors holds, per protocol that did not answer or failed, its error.
	Errors map[PortMapProtocol]error
}

// String summarises r on one line, e.g.
// "PCP yes / NAT-PMP yes / UPnP IGD v2 at 192.168.1.1".
func (r PortMappingReport) String() string {
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	upnp := "UPnP IGD no"
	if r.UPnP {
		upnp = fmt.Sprintf("UPnP IGD v%d", r.UPnPVersion)
	}
	s := fmt.Sprintf("PCP %s / NAT-PMP %s / %s", yn(r.PCP), yn(r.NATPMP), upnp)
	if r.Gateway.IsValid() {
		s += " at " + r.Gateway.String()
	}
	if r.External.IsValid() {
		s += fmt.Sprintf(" (external %v by %v)", r.External, r.ExternalFrom)
	}
	return s
}

// PortMapError is a router's refusal, or a reply that makes no sense.
type PortMapError struct {
	Protocol PortMapProtocol
	// Code is the router's result code: PCP's or NAT-PMP's result code, or
	// the UPnP error code of the SOAP fault (606, 718, 725, ...). Zero for
	// a malformed reply.
	Code int
	// Reason names the code ("NOT_AUTHORIZED", "ConflictInMappingEntry").
	Reason string
}

func (e *PortMapError) Error() string {
	return fmt.Sprintf("nat: %v refused: %s (result code %d)", e.Protocol, e.Reason, e.Code)
}

// PortMapper asks the router (the default gateway) to forward public ports
// to this host, with PCP, NAT-PMP or UPnP IGD, and keeps the mappings alive
// until Close. The zero value asks the default gateway, tries PCP, then
// NAT-PMP, then UPnP IGD, and logs to slog.Default().
//
// It maps only what Map is asked for, and refuses (ErrPublicAddress) when
// this host's own address towards the gateway is public.
//
// A PortMapper is safe for concurrent use. Map starts one goroutine that
// renews the mappings at half their lifetime (re-creating them if the router
// forgot them, e.g. after a restart); Close stops it, waits for it, and
// deletes every mapping. Fields must not change after the first call.
type PortMapper struct {
	// Gateway optionally specifies the router to ask. If invalid, the
	// default IPv4 gateway of the host's routing table is used (Linux:
	// /proc/net/route).
	Gateway netip.Addr

	// Protocols optionally lists the protocols to try, in order. If empty,
	// PCP, NAT-PMP, then UPnP IGD. Map uses the first that grants the
	// mapping and keeps renewing with it.
	Protocols []PortMapProtocol

	// Description optionally labels UPnP mappings (shown in the router's
	// web UI); if empty, "hairpin".
	Description string

	// Timeout optionally bounds each protocol's exchange; if zero, 3 s.
	Timeout time.Duration

	// Dial optionally opens connections to the gateway: UDP for PCP and
	// NAT-PMP (it must be a connected socket), TCP for UPnP's HTTP. If
	// nil, net.Dialer.DialContext is used.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// ListenPacket optionally opens the UDP socket of the SSDP search
	// (UPnP discovery); if nil, net.ListenConfig.ListenPacket.
	ListenPacket func(ctx context.Context, network, address string) (net.PacketConn, error)

	// Logger optionally specifies where to log; if nil, slog.Default().
	Logger *slog.Logger

	// gatewayFunc finds the default gateway; nil means the routing table.
	gatewayFunc func() (netip.Addr, error)
	// now is the clock; nil means time.Now.
	now func() time.Time

	mu        sync.Mutex
	closed    bool
	preferred PortMapProtocol
	upnp      *upnpDevice
	maps      []*mapState
	epochs    map[PortMapProtocol]epochObservation
	// epochResets counts the router restarts the epochs revealed.
	epochResets int
	wake        chan struct{}
	stop        chan struct{}
	done        chan struct{}
	started     bool
}

// mapState is one mapping as asked and as granted.
type mapState struct {
	transport Transport
	internal  uint16
	external  uint16 // asked for
	lifetime  time.Duration
	nonce     [12]byte // PCP
	got       Mapping
	next      time.Time // next renewal
}

func (m *PortMapper) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}

func (m *PortMapper) timeout() time.Duration {
	if m.Timeout > 0 {
		return m.Timeout
	}
	return defaultPortMapTimeout
}

func (m *PortMapper) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

func (m *PortMapper) protocols() []PortMapProtocol {
	if len(m.Protocols) > 0 {
		return m.Protocols
	}
	return []PortMapProtocol{PortMapPCP, PortMapNATPMP, PortMapUPnP}
}

func (m *PortMapper) description() string {
	if m.Description != "" {
		return m.Description
	}
	return "hairpin"
}

func (m *PortMapper) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if m.Dial != nil {
		return m.Dial(ctx, network, address)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

func (m *PortMapper) listenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	if m.ListenPacket != nil {
		return m.ListenPacket(ctx, network, address)
	}
	var lc net.ListenConfig
	return lc.ListenPacket(ctx, network, address)
}

// gateway returns the router to ask.
func (m *PortMapper) gateway() (netip.Addr, error) {
	if m.Gateway.IsValid() {
		return m.Gateway.Unmap(), nil
	}
	f := m.gatewayFunc
	if f == nil {
		f = defaultGateway
	}
	gw, err := f()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("nat: finding the default gateway: %w", err)
	}
	return gw, nil
}

// localAddr returns this host's address towards gw: the local address of a
// UDP socket connected to it (no packet is sent).
func (m *PortMapper) localAddr(ctx context.Context, gw netip.Addr) (netip.Addr, error) {
	c, err := m.dial(ctx, "udp4", netip.AddrPortFrom(gw, pcpPort).String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("nat: local address towards %v: %w", gw, err)
	}
	defer c.Close()
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("nat: local address towards %v: %w", gw, err)
	}
	return ap.Addr().Unmap(), nil
}

// checkLocal refuses a public local address (see ErrPublicAddress).
func checkLocal(a netip.Addr) error {
	if isPublic(a) {
		return fmt.Errorf("%w (%v)", ErrPublicAddress, a)
	}
	return nil
}

// cgnPrefix is the shared address space of carrier-grade NAT (RFC 6598):
// a host there is behind a NAT, like one in the private ranges.
var cgnPrefix = netip.MustParsePrefix("100.64.0.0/10")

// isPublic reports whether a is a global unicast address outside the
// private (RFC 1918, RFC 4193) and shared (RFC 6598) ranges: a host with
// such an address is reachable without any mapping, and asking a router to
// forward to it would only open it further.
func isPublic(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsGlobalUnicast() && !a.IsPrivate() && !cgnPrefix.Contains(a)
}

// Probe asks the gateway which port-mapping protocols it answers (every
// protocol of Protocols, without mapping anything: PCP ANNOUNCE, NAT-PMP's
// external address request, the UPnP device description and
// GetExternalIPAddress). It returns an error only when the gateway or the
// local address cannot be found; a protocol that does not answer is recorded
// in the report's Errors.
func (m *PortMapper) Probe(ctx context.Context) (PortMappingReport, error) {
	var r PortMappingReport
	gw, err := m.gateway()
	if err != nil {
		return r, err
	}
	r.Gateway = gw
	local, err := m.localAddr(ctx, gw)
	if err != nil {
		return r, err
	}
	r.Local = local
	r.Errors = map[PortMapProtocol]error{}
	setExt := func(a netip.Addr, p PortMapProtocol) {
		if !r.External.IsValid() && a.IsValid() && !a.IsUnspecified() {
			r.External, r.ExternalFrom = a, p
		}
	}
	type result struct {
		p   PortMapProtocol
		ext netip.Addr
		dev *upnpDevice
		err error
	}
	protos := m.protocols()
	results := make(chan result, len(protos))
	for _, p := range protos {
		go func() {
			pctx, cancel := context.WithTimeout(ctx, m.timeout())
			defer cancel()
			res := result{p: p}
			switch p {
			case PortMapPCP:
				res.ext, res.err = m.pcpAnnounce(pctx, gw, local)
			case PortMapNATPMP:
				res.ext, res.err = m.natpmpExternal(pctx, gw)
			case PortMapUPnP:
				res.dev, res.err = m.upnpDiscover(pctx, gw)
				if res.err == nil {
					res.ext, res.err = m.upnpExternal(pctx, res.dev)
				}
			default:
				res.err = fmt.Errorf("nat: unknown port-mapping protocol %v", p)
			}
			results <- res
		}()
	}
	byProto := map[PortMapProtocol]result{}
	for range protos {
		res := <-results
		byProto[res.p] = res
	}
	for _, p := range protos {
		res := byProto[p]
		answered := res.err == nil
		if p == PortMapUPnP && res.dev != nil {
			// The device answered even if GetExternalIPAddress failed.
			answered = true
			r.UPnPVersion = res.dev.version
			r.UPnPLocation = res.dev.location
			m.mu.Lock()
			if m.upnp == nil {
				m.upnp = res.dev
			}
			m.mu.Unlock()
		}
		if res.err != nil {
			r.Errors[p] = res.err
		}
		switch p {
		case PortMapPCP:
			r.PCP = answered
		case PortMapNATPMP:
			r.NATPMP = answered
		case PortMapUPnP:
			r.UPnP = answered
		}
		if res.err == nil {
			setExt(res.ext, p)
		}
	}
	return r, nil
}

// Map asks the router to forward externalPort (or, when zero, a port of the
// router's choice, preferably internalPort) of its public address to
// internalPort of this host, for transport, with the given lifetime (zero:
// DefaultMappingLifetime). The router may grant another external port or a
// shorter lifetime: the returned Mapping says what it granted. The mapping
// is renewed in the background until Close, which deletes it.
//
// Protocols are tried in order; the error, when none grants the mapping,
// joins each protocol's (a refusal is a *PortMapError naming the protocol
// and the router's result code; ErrNoPortMapping when none answered).
func (m *PortMapper) Map(ctx context.Context, transport Transport, internalPort, externalPort uint16, lifetime time.Duration) (Mapping, error) {
	if transport != TransportUDP && transport != TransportTCP {
		return Mapping{}, fmt.Errorf("nat: map: transport %v: want udp or tcp", transport)
	}
	if internalPort == 0 {
		return Mapping{}, errors.New("nat: map: internal port 0")
	}
	if lifetime < 0 {
		return Mapping{}, fmt.Errorf("nat: map: negative lifetime %v", lifetime)
	}
	if lifetime == 0 {
		lifetime = DefaultMappingLifetime
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Mapping{}, ErrPortMapperClosed
	}
	m.mu.Unlock()

	st := &mapState{transport: transport, internal: internalPort, external: externalPort, lifetime: lifetime}
	if _, err := randRead(st.nonce[:]); err != nil {
		return Mapping{}, fmt.Errorf("nat: map: nonce: %w", err)
	}
	got, err := m.request(ctx, st, m.order())
	if err != nil {
		return Mapping{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		// Close ran meanwhile: do not leave this one behind.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		m.mu.Unlock()
		derr := m.remove(dctx, st)
		m.mu.Lock()
		return Mapping{}, netcore.Join(ErrPortMapperClosed, derr)
	}
	m.preferred = got.Protocol
	m.maps = append(m.maps, st)
	m.startLocked()
	m.logger().Info("nat: port mapped", "protocol", got.Protocol, "transport", got.Transport,
		"internal", got.Internal, "external", got.External, "lifetime", got.Lifetime)
	return got, nil
}

// Mappings returns the current mappings, as last granted.
func (m *PortMapper) Mappings() []Mapping {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Mapping, 0, len(m.maps))
	for _, st := range m.maps {
		out = append(out, st.got)
	}
	return out
}

// order returns the protocols to try, the one that worked last first.
func (m *PortMapper) order() []PortMapProtocol {
	m.mu.Lock()
	pref := m.preferred
	m.mu.Unlock()
	ps := slices.Clone(m.protocols())
	if i := slices.Index(ps, pref); i > 0 {
		ps = append([]PortMapProtocol{pref}, slices.Delete(ps, i, i+1)...)
	}
	return ps
}

// request creates or renews st with the first protocol of order that grants
// it, and records the grant in st.got.
func (m *PortMapper) request(ctx context.Context, st *mapState, order []PortMapProtocol) (Mapping, error) {
	gw, err := m.gateway()
	if err != nil {
		return Mapping{}, err
	}
	local, err := m.localAddr(ctx, gw)
	if err != nil {
		return Mapping{}, err
	}
	if err := checkLocal(local); err != nil {
		return Mapping{}, err
	}
	var errs []error
	answered := false
	for _, p := range order {
		pctx, cancel := context.WithTimeout(ctx, m.timeout())
		got, err := m.requestWith(pctx, p, gw, local, st)
		cancel()
		if err == nil {
			got.Gateway = gw
			if got.Lifetime > 0 {
				got.Expires = m.clock().Add(got.Lifetime)
			}
			m.mu.Lock()
			st.got = got
			st.next = m.clock().Add(max(got.Lifetime/2, minRenew))
			if got.Lifetime == 0 {
				// Permanent (UPnP v1): re-add now and then anyway, so a
				// restarted router gets it back.
				st.next = m.clock().Add(max(st.lifetime/2, minRenew))
			}
			m.mu.Unlock()
			return got, nil
		}
		var pe *PortMapError
		if errors.As(err, &pe) {
			answered = true
			errs = append(errs, err) // it names the protocol
		} else {
			errs = append(errs, fmt.Errorf("%v: %w", p, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	what := fmt.Sprintf("nat: mapping %v port %d", st.transport, st.internal)
	if !answered {
		return Mapping{}, fmt.Errorf("%s: %w", what, netcore.Join(append([]error{ErrNoPortMapping}, errs...)...))
	}
	return Mapping{}, fmt.Errorf("%s: %w", what, netcore.Join(errs...))
}

func (m *PortMapper) requestWith(ctx context.Context, p PortMapProtocol, gw, local netip.Addr, st *mapState) (Mapping, error) {
	ext := st.external
	if st.got.Protocol == p && st.got.External.Port() != 0 {
		// Renewal: ask for what we have.
		ext = st.got.External.Port()
	}
	switch p {
	case PortMapPCP:
		return m.pcpMap(ctx, gw, local, st.transport, st.internal, ext, st.lifetime, st.nonce)
	case PortMapNATPMP:
		return m.natpmpMap(ctx, gw, local, st.transport, st.internal, ext, st.lifetime)
	case PortMapUPnP:
		dev, err := m.upnpDevice(ctx, gw)
		if err != nil {
			return Mapping{}, err
		}
		got, err := m.upnpMap(ctx, dev, local, st.transport, st.internal, ext, st.lifetime, st.got.Protocol == p)
		var pe *PortMapError
		if err != nil && !errors.As(err, &pe) && ctx.Err() == nil {
			// Not a refusal: the device may have moved (a restarted
			// miniupnpd listens on a new port). Discover it again.
			m.mu.Lock()
			if m.upnp == dev {
				m.upnp = nil
			}
			m.mu.Unlock()
			if dev, derr := m.upnpDevice(ctx, gw); derr == nil {
				got, err = m.upnpMap(ctx, dev, local, st.transport, st.internal, ext, st.lifetime, st.got.Protocol == p)
			}
		}
		return got, err
	}
	return Mapping{}, fmt.Errorf("unknown port-mapping protocol %v", p)
}

// upnpDevice returns the cached IGD, discovering it on first use.
func (m *PortMapper) upnpDevice(ctx context.Context, gw netip.Addr) (*upnpDevice, error) {
	m.mu.Lock()
	dev := m.upnp
	m.mu.Unlock()
	if dev != nil && dev.gateway == gw {
		return dev, nil
	}
	dev, err := m.upnpDiscover(ctx, gw)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.upnp = dev
	m.mu.Unlock()
	return dev, nil
}

// remove deletes st's mapping with the protocol that made it.
func (m *PortMapper) remove(ctx context.Context, st *mapState) error {
	got := st.got
	var err error
	switch got.Protocol {
	case PortMapPCP:
		err = m.pcpDelete(ctx, got.Gateway, got.Internal.Addr(), st.transport, st.internal, st.nonce)
	case PortMapNATPMP:
		err = m.natpmpDelete(ctx, got.Gateway, st.transport, st.internal)
	case PortMapUPnP:
		var dev *upnpDevice
		dev, err = m.upnpDevice(ctx, got.Gateway)
		if err == nil {
			err = m.upnpDelete(ctx, dev, st.transport, got.External.Port())
		}
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("nat: deleting %v mapping %v->%v: %w", got.Protocol, got.External, got.Internal, err)
	}
	m.logger().Info("nat: port mapping deleted", "protocol", got.Protocol, "transport", got.Transport,
		"internal", got.Internal, "external", got.External)
	return nil
}

func (m *PortMapper) startLocked() {
	if m.started {
		select {
		case m.wake <- struct{}{}:
		default:
		}
		return
	}
	m.started = true
	m.wake = make(chan struct{}, 1)
	m.stop = make(chan struct{})
	m.done = make(chan struct{})
	go m.renewLoop()
}

// renewLoop renews each mapping when its time comes, until Close.
func (m *PortMapper) renewLoop() {
	defer close(m.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-m.stop
		cancel()
	}()
	for {
		m.mu.Lock()
		var due *mapState
		var next time.Time
		for _, st := range m.maps {
			if due == nil || st.next.Before(next) {
				due, next = st, st.next
			}
		}
		m.mu.Unlock()
		wait := time.Hour
		if due != nil {
			wait = next.Sub(m.clock())
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-m.stop:
				t.Stop()
				return
			case <-m.wake:
				t.Stop()
				continue
			case <-t.C:
			}
		}
		if due == nil {
			continue
		}
		select {
		case <-m.stop:
			return
		default:
		}
		m.renew(ctx, due)
	}
}

// renew renews st, falling back to the other protocols if its own fails.
func (m *PortMapper) renew(ctx context.Context, st *mapState) {
	m.mu.Lock()
	before := st.got
	m.mu.Unlock()
	order := m.order()
	if i := slices.Index(order, before.Protocol); i > 0 {
		order = append([]PortMapProtocol{before.Protocol}, slices.Delete(order, i, i+1)...)
	}
	got, err := m.request(ctx, st, order)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		m.logger().Warn("nat: renewing port mapping failed; retrying", "transport", st.transport,
			"internal", st.internal, "external", before.External, "err", err)
		m.mu.Lock()
		st.next = m.clock().Add(retryRenew)
		m.mu.Unlock()
		return
	}
	if got.External != before.External || got.Protocol != before.Protocol {
		m.logger().Info("nat: port mapping changed on renewal", "protocol", got.Protocol, "transport", got.Transport,
			"internal", got.Internal, "external", got.External, "was", before.External)
	} else {
		m.logger().Debug("nat: port mapping renewed", "protocol", got.Protocol, "transport", got.Transport,
			"external", got.External, "lifetime", got.Lifetime)
	}
}

// Close stops renewing and deletes every mapping (waiting at most 5 s for
// the router); see Shutdown.
func (m *PortMapper) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return m.Shutdown(ctx)
}

// Shutdown stops the renewal goroutine, waits for it, and deletes every
// mapping, until ctx ends. It returns the deletion errors joined. Map fails
// with ErrPortMapperClosed afterwards.
func (m *PortMapper) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	started := m.started
	maps := m.maps
	m.maps = nil
	m.mu.Unlock()
	if started {
		close(m.stop)
		<-m.done
	}
	var errs []error
	for _, st := range maps {
		errs = append(errs, m.remove(ctx, st))
	}
	return netcore.Join(errs...)
}
