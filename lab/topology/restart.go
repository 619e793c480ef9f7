package topology

import "time"

// restart checks a service's restart policy and its bounds.
func (c *checker) restart(p path, s *Service) {
	switch s.Restart {
	case "", RestartOnFailure, RestartAlways, RestartNever:
	default:
		c.add(p.with("restart"), "restart %q must be on-failure (the default), always or never", s.Restart)
	}
	if m := s.MaxRestarts; m != nil && (*m < 1 || *m > 100) {
		c.add(p.with("max-restarts"), "max-restarts %d must be between 1 and 100 (restart: never keeps a service down)", *m)
	}
	if w := time.Duration(s.RestartWindow); w != 0 && (w < time.Second || w > 24*time.Hour) {
		c.add(p.with("restart-window"), "restart-window %s must be between 1s and 24h", w)
	}
	if s.Restart == RestartNever {
		if s.MaxRestarts != nil {
			c.add(p.with("max-restarts"), "max-restarts has no effect with restart: never")
		}
		if s.RestartWindow != 0 {
			c.add(p.with("restart-window"), "restart-window has no effect with restart: never")
		}
	}
}
