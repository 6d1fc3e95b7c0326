package main

import (
	"testing"

	"github.com/hairpin-go/hairpin/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
