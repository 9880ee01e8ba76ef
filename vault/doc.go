// Package vault is token-rotator's store: it logs in to HashiCorp Vault with the configured auth
// method and reads and writes the KV secrets holding client credentials, refresh tokens and access
// tokens. KV version 2 is used with check-and-set; version 1 is supported, without it. The version
// is detected from the mount, as the vault CLI does.
package vault
