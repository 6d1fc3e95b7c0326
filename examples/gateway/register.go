package main

import (
	"github.com/hairpin-go/hairpin/relay"
	"github.com/prometheus/client_golang/prometheus"
)

// register adds collectors for every running part to reg. Each reads the
// part's Stats snapshot at scrape time.
func (g *gateway) register(reg *prometheus.Registry) {
	counter := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("hairpin_"+name, help, labels, nil)
	}
	if g.dns != nil {
		queries := counter("dns_queries_total", "DNS queries answered, by view and rcode.", "view", "rcode")
		hits := counter("dns_cache_hits_total", "Forwarded names answered from the cache.")
		misses := counter("dns_cache_misses_total", "Forwarded names that went upstream.")
		entries := counter("dns_cache_entries", "Answers in the cache now.")
		upFail := counter("dns_upstream_failures_total", "Queries no upstream answered.")
		stale := counter("dns_stale_served_total", "Stale answers served (RFC 8767).")
		limited := counter("dns_rate_limited_total", "UDP queries dropped or slipped by the rate limit.")
		malformed := counter("dns_malformed_total", "Packets that did not parse.")
		srv := g.dns
		reg.MustRegister(&statsCollector{
			descs: []*prometheus.Desc{queries, hits, misses, entries, upFail, stale, limited, malformed},
			collect: func(ch chan<- prometheus.Metric) {
				s := srv.Stats()
				for view, byRcode := range s.Queries {
					for rcode, n := range byRcode {
						ch <- prometheus.MustNewConstMetric(queries, prometheus.CounterValue, float64(n), view, rcode)
					}
				}
				ch <- prometheus.MustNewConstMetric(hits, prometheus.CounterValue, float64(s.CacheHits))
				ch <- prometheus.MustNewConstMetric(misses, prometheus.CounterValue, float64(s.CacheMisses))
				ch <- prometheus.MustNewConstMetric(entries, prometheus.GaugeValue, float64(s.CacheEntries))
				ch <- prometheus.MustNewConstMetric(upFail, prometheus.CounterValue, float64(s.UpstreamFailures))
				ch <- prometheus.MustNewConstMetric(stale, prometheus.CounterValue, float64(s.StaleServed))
				ch <- prometheus.MustNewConstMetric(limited, prometheus.CounterValue, float64(s.RateLimited))
				ch <- prometheus.MustNewConstMetric(malformed, prometheus.CounterValue, float64(s.Malformed))
			},
		})
	}
	if g.proxy != nil {
		accepted := counter("proxy_accepted_total", "Connections accepted.")
		routed := counter("proxy_routed_total", "Connections handed to a backend.")
		open := counter("proxy_open_connections", "Client connections open now.")
		rejected := counter("proxy_rejected_total", "Connections closed before routing, by reason.", "reason")
		p := g.proxy
		reg.MustRegister(&statsCollector{
			descs: []*prometheus.Desc{accepted, routed, open, rejected},
			collect: func(ch chan<- prometheus.Metric) {
				s := p.Stats()
				ch <- prometheus.MustNewConstMetric(accepted, prometheus.CounterValue, float64(s.Accepted))
				ch <- prometheus.MustNewConstMetric(routed, prometheus.CounterValue, float64(s.Routed))
				ch <- prometheus.MustNewConstMetric(open, prometheus.GaugeValue, float64(s.Open))
				for reason, n := range s.Rejected {
					ch <- prometheus.MustNewConstMetric(rejected, prometheus.CounterValue, float64(n), reason)
				}
			},
		})
	}
	if g.relay != nil {
		allocs := counter("relay_allocations", "TURN allocations now.")
		allocsTotal := counter("relay_allocations_total", "TURN allocations ever created.")
		ports := counter("relay_ports_in_use", "Relay ports bound now.")
		portRange := counter("relay_port_range_size", "Ports in the relay port range.")
		authFail := counter("relay_auth_failures_total", "Requests refused with 401 for bad credentials.")
		denials := counter("relay_peer_denials_total", "Requests or packets refused by the peer policy.")
		own := counter("relay_own_address_denials_total", "Of those, the ones naming one of the relay's own listening or relayed addresses (a loop attempt).")
		quota := counter("relay_quota_rejections_total", "Allocations or permissions refused by a limit.")
		bytes := counter("relay_bytes_total", "Bytes relayed, by user (bounded; the rest under \"other\") and direction.", "user", "direction")
		packets := counter("relay_packets_total", "Packets relayed, by user (bounded; the rest under \"other\") and direction.", "user", "direction")
		r := g.relay
		reg.MustRegister(&statsCollector{
			descs: []*prometheus.Desc{allocs, allocsTotal, ports, portRange, authFail, denials, own, quota, bytes, packets},
			collect: func(ch chan<- prometheus.Metric) {
				s := r.Stats()
				ch <- prometheus.MustNewConstMetric(allocs, prometheus.GaugeValue, float64(s.Allocations))
				ch <- prometheus.MustNewConstMetric(allocsTotal, prometheus.CounterValue, float64(s.AllocationsTotal))
				ch <- prometheus.MustNewConstMetric(ports, prometheus.GaugeValue, float64(s.RelayPortsInUse))
				ch <- prometheus.MustNewConstMetric(portRange, prometheus.GaugeValue, float64(s.PortRangeSize))
				ch <- prometheus.MustNewConstMetric(authFail, prometheus.CounterValue, float64(s.AuthFailures))
				ch <- prometheus.MustNewConstMetric(denials, prometheus.CounterValue, float64(s.PeerDenials))
				ch <- prometheus.MustNewConstMetric(own, prometheus.CounterValue, float64(s.OwnDenials))
				ch <- prometheus.MustNewConstMetric(quota, prometheus.CounterValue, float64(s.QuotaRejections))
				emit := func(user string, u relay.UserStats) {
					ch <- prometheus.MustNewConstMetric(bytes, prometheus.CounterValue, float64(u.BytesToPeer), user, "to_peer")
					ch <- prometheus.MustNewConstMetric(bytes, prometheus.CounterValue, float64(u.BytesFromPeer), user, "from_peer")
					ch <- prometheus.MustNewConstMetric(packets, prometheus.CounterValue, float64(u.PacketsToPeer), user, "to_peer")
					ch <- prometheus.MustNewConstMetric(packets, prometheus.CounterValue, float64(u.PacketsFromPeer), user, "from_peer")
				}
				for user, u := range s.Users {
					emit(user, u)
				}
				emit("other", s.OtherUsers)
			},
		})
	}
	if g.cfg.NAT != nil {
		info := counter("nat_info", "What the last NAT probe found (value 1; the facts are labels).",
			"public", "mapping", "filtering", "hairpinning", "classic")
		lifetime := counter("nat_mapping_lifetime_seconds", "Measured UDP mapping lifetime (absent until measured; nat.lifetime: true).")
		reg.MustRegister(&statsCollector{
			descs: []*prometheus.Desc{info, lifetime},
			collect: func(ch chan<- prometheus.Metric) {
				g.mu.Lock()
				r, public, lt := g.report, g.public, g.lifetime
				g.mu.Unlock()
				if lt != nil {
					ch <- prometheus.MustNewConstMetric(lifetime, prometheus.GaugeValue, lt.MappingLifetime.Seconds())
				}
				if r == nil {
					ch <- prometheus.MustNewConstMetric(info, prometheus.GaugeValue, 1, public.String(), "unknown", "unknown", "unknown", "unknown")
					return
				}
				ch <- prometheus.MustNewConstMetric(info, prometheus.GaugeValue, 1, public.String(),
					r.Mapping.String(), r.Filtering.String(), r.Hairpinning.String(), classic(r))
			},
		})
	}
}
