package engine

import "github.com/dcyfr/cyberdrew/internal/store"

// Drained reports whether the pool's last claim left nothing claimable,
// so that a publication's runs may start on it at once.
func (p *WorkerPool) Drained() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.drained
}

// Reserve and Take are reserve and take, for a hand-off that races Stop.
func (p *WorkerPool) Reserve(n int) int { return p.reserve(n) }

func (p *WorkerPool) Take(l *store.Lease) { p.take(l) }

// LeaseRequest is what the pool asks the store for at a publication.
func (p *WorkerPool) LeaseRequest() store.LeaseRequest {
	return store.LeaseRequest{Owner: p.opts.Owner, TTL: p.opts.LeaseTTL}
}
