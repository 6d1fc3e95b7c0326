package nat

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/natlab"
)

// lossKinds are the kinds the loss tests run on: each filtering behaviour,
// and a symmetric mapping.
var lossKinds = []natlab.Kind{natlab.OneToOne, natlab.AddressRestricted, natlab.PortRestricted, natlab.Symmetric}

// wrongVerdicts lists the verdicts of rep that are known and contradict
// the lab's ground truth; unknown verdicts are not wrong.
func wrongVerdicts(lab *natlab.Lab, rep *Report) []string {
	k := lab.Config().Kind
	var out []string
	if rep == nil || !rep.UDP {
		return []string{"UDP reported blocked"}
	}
	if rep.Mapping != BehaviorUnknown && rep.Mapping.String() != k.Mapping().String() {
		out = append(out, fmt.Sprintf("mapping %v, truth %v", rep.Mapping, k.Mapping()))
	}
	if rep.Filtering != BehaviorUnknown && rep.Filtering.String() != k.Filtering().String() {
		out = append(out, fmt.Sprintf("filtering %v, truth %v", rep.Filtering, k.Filtering()))
	}
	if rep.Hairpinning.Known() && rep.Hairpinning != answerOf(lab.Hairpins()) {
		out = append(out, fmt.Sprintf("hairpinning %v, truth %v", rep.Hairpinning, lab.Hairpins()))
	}
	return out
}

// TestLabLossNeverWrong: at 20 % loss each way (about 36 % of round trips)
// a few probes per kind never give a wrong verdict; what they cannot
// confirm stays unknown.
func TestLabLossNeverWrong(t *testing.T) {
	interop.NeedRoot(t)
	t.Parallel()
	var cases []labCase
	for _, k := range lossKinds {
		cases = append(cases, labCase{k.String(), func(t *testing.T) {
			lab := natlab.New(t, natlab.Config{Kind: k, Loss: 20})
			srv := labServer(t, lab)
			for run := range 3 {
				c := labClient(lab, natlab.LAN1, srv)
				rep, err := c.Probe(t.Context())
				if w := wrongVerdicts(lab, rep); len(w) > 0 {
					t.Errorf("run %d: wrong verdicts %v (err %v, loss %.2f)", run, w, err, rep.Loss)
				}
				if rep != nil {
					t.Logf("run %d: mapping %v filtering %v (%v) loss %.2f over %d, %v", run, rep.Mapping, rep.Filtering,
						rep.Confidence.Filtering, rep.Loss, rep.LossSamples, rep.Duration.Round(time.Millisecond))
				}
			}
		}})
	}
	runCases(t, labConcurrency, cases)
}

// TestLabLineKinds: a restricted port set and a carrier-grade NAT are
// reported as such, with no inbound IPv4.
func TestLabLineKinds(t *testing.T) {
	interop.NeedRoot(t)
	t.Parallel()
	var cases []labCase
	for _, k := range natlab.LineKinds() {
		cases = append(cases, labCase{k.String(), func(t *testing.T) {
			lab := natlab.New(t, natlab.Config{Kind: k})
			srv := labServer(t, lab)
			rep, err := labClient(lab, natlab.LAN1, srv).Probe(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			r, _ := k.PortRange()
			if rep.RestrictedPorts != Yes || len(rep.PortRanges) == 0 {
				t.Errorf("restricted ports %v, ranges %v; want yes within %v", rep.RestrictedPorts, rep.PortRanges, r)
			}
			for _, p := range rep.PortRanges {
				if p.First < r[0] || p.Last > r[1] {
					t.Errorf("range %v outside the line's ports %v", p, r)
				}
			}
			if rep.PortPreserved != No {
				t.Errorf("port preserved %v", rep.PortPreserved)
			}
			if k.BehindCGN() && (rep.CarrierGradeNAT != Yes || rep.DoubleNAT != Yes) {
				t.Errorf("CGN %v, double NAT %v", rep.CarrierGradeNAT, rep.DoubleNAT)
			}
			if rep.InboundIPv4 != No || rep.InboundIPv4Reason == "" {
				t.Errorf("inbound IPv4 %v (%q), want no", rep.InboundIPv4, rep.InboundIPv4Reason)
			}
			t.Logf("%v: ranges %v; %s", k, rep.PortRanges, rep.InboundIPv4Reason)
		}})
	}
	runCases(t, labConcurrency, cases)
}

// BenchmarkLabLoss is the accuracy benchmark (HAIRPIN_LOSS_RUNS runs per
// kind, default 20): probes at 0 and 20 % loss each way, counting wrong
// verdicts, complete reports (mapping and filtering known) and the median
// time. When coturn's turnutils_natdiscovery is installed, it runs the same
// number of times on the same lab, against the same server, and its
// mapping and filtering verdicts are counted the same way (peer-*
// metrics; wrong-mf is ours on mapping and filtering alone, the verdicts
// both give; HAIRPIN_LOSS_PEER=0 leaves it out). Run:
//
//	go test -run XXX -bench LabLoss -benchtime 1x ./nat
func BenchmarkLabLoss(b *testing.B) {
	interop.NeedRoot(b)
	runs := 20
	if n, err := strconv.Atoi(os.Getenv("HAIRPIN_LOSS_RUNS")); err == nil && n > 0 {
		runs = n
	}
	peer, _ := exec.LookPath("turnutils_natdiscovery")
	if os.Getenv("HAIRPIN_LOSS_PEER") == "0" {
		peer = "" // ours alone: for the long runs
	}
	median := func(ts []time.Duration) float64 {
		if len(ts) == 0 {
			return 0
		}
		slices.Sort(ts)
		return ts[len(ts)/2].Seconds()
	}
	for _, loss := range []int{0, 20} {
		for _, k := range lossKinds {
			b.Run(fmt.Sprintf("%v/loss=%d", k, loss), func(b *testing.B) {
				lab := natlab.New(b, natlab.Config{Kind: k, Loss: loss})
				srv := labServer(b, lab)
				mfWrong := func(m, f Behavior) bool {
					return (m != BehaviorUnknown && m.String() != k.Mapping().String()) ||
						(f != BehaviorUnknown && f.String() != k.Filtering().String())
				}
				for range b.N {
					wrong, wrongMF, complete := 0, 0, 0
					pWrong, pComplete := 0, 0
					var times, ptimes []time.Duration
					for range runs {
						rep, _ := labClient(lab, natlab.LAN1, srv).Probe(b.Context())
						if w := wrongVerdicts(lab, rep); len(w) > 0 {
							wrong++
							if rep != nil {
								b.Logf("wrong verdict %v; loss measured %.2f over %d, confidence %+v", w, rep.Loss, rep.LossSamples, rep.Confidence)
							} else {
								b.Logf("wrong verdict %v (no report)", w)
							}
						}
						if rep == nil || !rep.UDP || mfWrong(rep.Mapping, rep.Filtering) {
							wrongMF++
						}
						if rep != nil && rep.Mapping != BehaviorUnknown && rep.Filtering != BehaviorUnknown {
							complete++
						}
						if rep != nil {
							times = append(times, rep.Duration)
						}
						if peer == "" {
							continue
						}
						ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
						start := time.Now()
						out, _ := lab.CommandContext(ctx, natlab.LAN1, peer, "-m", "-f",
							"-p", strconv.Itoa(int(srv.Port())), srv.Addr().String()).CombinedOutput()
						cancel()
						ptimes = append(ptimes, time.Since(start))
						m, f := natdiscoveryResult(string(out))
						if mfWrong(m, f) {
							pWrong++
						}
						if m != BehaviorUnknown && f != BehaviorUnknown {
							pComplete++
						}
					}
					b.ReportMetric(float64(wrong), "wrong")
					b.ReportMetric(float64(wrongMF), "wrong-mf")
					b.ReportMetric(100*float64(complete)/float64(runs), "%complete")
					b.ReportMetric(median(times), "median-s")
					b.ReportMetric(float64(runs), "runs")
					if peer != "" {
						b.ReportMetric(float64(pWrong), "peer-wrong")
						b.ReportMetric(100*float64(pComplete)/float64(runs), "peer-%complete")
						b.ReportMetric(median(ptimes), "peer-median-s")
					}
				}
			})
		}
	}
}
