package config

import (
	"fmt"
	"strings"
)

// notRelative says what is wrong with a KV path p that repeats the mount (`secret/stora/acme` with
// kv_mount secret) or carries the segment Vault's KV v2 HTTP API puts after the mount
// (`data/stora/acme`, `secret/metadata/stora/acme`), and which path was meant; "" when p is fine.
// Paths are relative to the mount and the job adds data/ and metadata/ itself, so such a path
// names a secret nobody wrote: every pass would fail with "secret not found" at
// secret/data/secret/stora/acme. (A KV version 1 mount has no data/ segment; a path there that
// begins with data/ is refused too, as the rare price of catching the common mistake at load.)
func notRelative(mount, p string) string {
	rest := p
	var what []string
	if mount != "" && (rest == mount || strings.HasPrefix(rest, mount+"/")) {
		rest = strings.TrimPrefix(strings.TrimPrefix(rest, mount), "/")
		what = append(what, "repeats the KV mount")
	}
	if seg, after, _ := strings.Cut(rest, "/"); seg == "data" || seg == "metadata" {
		rest = after
		what = append(what, fmt.Sprintf("carries the KV API's %s/ segment, which the job adds itself", seg))
	}
	if len(what) == 0 {
		return ""
	}
	meant := fmt.Sprintf("write %q", rest)
	if rest == "" {
		meant = "name a path inside the mount"
	}
	return fmt.Sprintf("%q %s: paths are relative to vault.kv_mount (%q); %s", p, strings.Join(what, " and "), mount, meant)
}
