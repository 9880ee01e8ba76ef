// Package ha holds no code: its tests run token-rotator against the Vault that production runs, a
// 3-node cluster with integrated storage (Raft), started once for the package
// (testenv.SharedCluster), and kill, seal and restart its nodes while the job works.
package ha
