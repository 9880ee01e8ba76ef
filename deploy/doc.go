// Package deploy holds token-rotator's Kubernetes manifests and Vault policies (the YAML and HCL
// files beside this one). It has no code: its tests decode every manifest strictly into the
// Kubernetes API types, check the settings the deployment relies on, and prove the Vault policies,
// setup.sh and the Kubernetes and AppRole logins against a real Vault dev server. The examples for
// apps, vault-agent/ and vso/, are tested here too: the first by running the real Vault Agent.
package deploy
