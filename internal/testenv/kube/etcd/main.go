// Command etcd is etcd's server, built from its published module for the tests' Kubernetes
// control plane (scripts/kube-bin). It is its own module so that etcd's dependencies stay out of
// the tool's go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
