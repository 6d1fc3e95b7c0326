package main

import "testing"

// TestCheckCredentialsAddr: the credentials endpoint issues relay
// credentials to anyone who asks, so it must not listen where the internet
// can reach it.
func TestCheckCredentialsAddr(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:8088", true},
		{"[::1]:8088", true},
		{"192.168.1.10:8088", true},
		{"[fd00::1]:8088", true},
		{"0.0.0.0:8088", false},
		{"[::]:8088", false},
		{":8088", false},
		{"203.0.113.1:8088", false},
		{"localhost:8088", false},
	}
	for _, tt := range tests {
		if err := checkCredentialsAddr(tt.addr); (err == nil) != tt.ok {
			t.Errorf("checkCredentialsAddr(%q) = %v, want ok %v", tt.addr, err, tt.ok)
		}
	}
}
