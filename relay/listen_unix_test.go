//go:build unix

package relay

import "syscall"

const syscallEADDRINUSE = syscall.EADDRINUSE
