package transport

// waitingNow returns how many deliveries and reservations wait for room.
func (m *Mailbox) waitingNow() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.waiting
}

// receivingNow returns how many receives wait for their message.
func (m *Mailbox) receivingNow() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.receiving
}
