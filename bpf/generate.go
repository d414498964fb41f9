package bpf

//go:generate ./gen.sh
