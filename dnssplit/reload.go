package dnssplit

// SetViews replaces the server's views atomically while it serves: a query
// sees either the old views or the new ones, never a mix. It is the reload
// path (a configuration file read again); the Views field itself must not
// change once serving has started. The cache is keyed by view name, so a
// view that keeps its name keeps its cached answers.
//
// With Transfer.Notify set, the zones of the new views are watched for
// changes like the old ones, and their secondaries are sent NOTIFY at once,
// since a reload may have changed any record.
//
// Serials follow the data across the reload: a zone that a view with the same
// name served before keeps its serial when its records are the same and gets
// a higher one when they changed; when the new data brings its own SOA whose
// serial is not higher although the records changed, a warning is logged
// (secondaries would keep the old data).
func (s *Server) SetViews(views []*View) {
	s.init()
	v := append([]*View(nil), views...)
	old := map[string]*View{}
	for _, ov := range s.views() {
		old[ov.Name] = ov
	}
	for _, nv := range v {
		ov := old[nv.Name]
		if ov == nil || nv.Records == nil {
			continue
		}
		for _, w := range nv.Records.carrySerials(ov.Records) {
			s.logger().Warn("dnssplit: zone changed on reload but its SOA serial did not increase; secondaries keep the old data",
				"view", nv.Name, "zone", w.Zone, "oldSerial", w.Old, "newSerial", w.New)
		}
	}
	s.swapped.Store(&v)
	s.answers.gen.Add(1)
	if s.notifier == nil {
		return
	}
	for _, view := range v {
		s.notifier.watch(view, true)
	}
}

// views returns the views in force: those of the last SetViews call, or the
// Views field.
func (s *Server) views() []*View {
	if v := s.swapped.Load(); v != nil {
		return *v
	}
	return s.Views
}
