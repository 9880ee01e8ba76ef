package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"token-rotator/config"
	"token-rotator/discovery"
	"token-rotator/oauth"
	"token-rotator/rotate"
	"token-rotator/vault"
)

// runAuthorize is `token-rotator authorize`: onboarding an operator for a partner. It makes a
// PKCE verifier and S256 challenge and a state, prints the authorization URL, takes the code the
// operator's approval returns (--code, or pasted: the code or the whole redirect URL, whose state
// must match), stores code, redirect_uri and code_verifier in the client's (or connection's)
// secret, and exchanges it at once unless --store-only: then the next pass does, within the
// code's 10 minutes. It prints no secret.
//
// It returns nil when the target is authorized (with --store-only: the code stored);
// errClientsFailed (exit 1), after a line saying why, when it is not: the server refused the code,
// or a pass in another process is rotating that secret right now (run authorize again once it has
// finished); any other error (exit 2) for bad flags, configuration, Vault or a refused approval.
func runAuthorize(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token-rotator authorize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "configuration file")
	name := fs.String("client", "", "the authorization_code client, or its connection: client/connection (required)")
	connection := fs.String("connection", "", "for a client with connections: the connection's path under the prefix, e.g. operator-4711")
	redirectURI := fs.String("redirect-uri", "", "the redirect URI registered for the partner application (required)")
	scope := fs.String("scope", "", "scopes to ask for; default: the client's scope")
	authorizeURL := fs.String("authorize-url", "", "default: the client's authorize_url; else its issuer's authorization_endpoint; else beside its token_url (.../token → .../authorize); else the config's authorize_url")
	code := fs.String("code", "", "an authorization code already at hand, from an authorization this command did not start (no URL is printed)")
	codeVerifier := fs.String("code-verifier", "", "with --code: the PKCE code_verifier that authorization used, if it used one")
	storeOnly := fs.Bool("store-only", false, "store the code for the next pass instead of exchanging it now")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if *name == "" || *redirectURI == "" {
		return errors.New("authorize: --client and --redirect-uri are required")
	}
	if client, conn, ok := strings.Cut(*name, "/"); ok { // a connection as logs and status name it
		if *connection != "" && *connection != conn {
			return fmt.Errorf("authorize: --client %s names connection %s, --connection %s another", *name, conn, *connection)
		}
		*name, *connection = client, conn
	}
	job, err := setUp(ctx, *configPath, []string{*name}, "warn", "text", stderr)
	if err != nil {
		return err
	}
	c := job.cfg.Client(*name)
	target, path, err := authorizeTarget(c, *connection)
	if err != nil {
		return err
	}
	if *code != "" && *codeVerifier == "" && c.AuthMethod == config.AuthNone {
		return fmt.Errorf("client %s is public (token_endpoint_auth_method none): give --code-verifier, the PKCE code_verifier its authorization used; its code cannot be exchanged without one", *name)
	}
	creds, err := job.store.Read(ctx, c.Secret)
	if err != nil {
		return err
	}
	clientID, _ := creds.Data["client_id"].(string)
	if clientID == "" {
		return fmt.Errorf("secret %s has no client_id", c.Secret)
	}
	// Before the operator spends an approval: can this Vault token store what it brings?
	cur, statErr := job.store.Read(ctx, path)
	if err := job.store.Writable(ctx, path, statErr == nil, false); err != nil {
		return fmt.Errorf("cannot store the authorization (run authorize with a Vault token that may create %s): %w", path, err)
	}
	// And is a pass rotating it right now? Its claim would keep the exchange below off the
	// secret. A code stored for the next pass (--store-only) is safe: that pass's write-back keeps it.
	if statErr == nil && !*storeOnly {
		if holder, until, ok := rotate.ClaimOn(cur.Data, time.Now()); ok {
			asked := "no approval was asked for and nothing was stored"
			if *code != "" {
				asked = "the code was not stored"
			}
			fmt.Fprintf(stdout, "%s: a pass is rotating it right now (claimed by %s until %s), so %s: run authorize again in a minute, once that pass has finished (%s at the latest)\n",
				target, holder, utc(until), asked, utc(until))
			return errClientsFailed
		}
	}
	// The issuer's metadata names the token endpoint the code goes to: read it before the operator
	// approves or a code is stored, so that a server that cannot be found costs nothing.
	var md *discovery.Metadata
	if c.Issuer != "" {
		if md, err = job.rotator.Discovery.Discover(ctx, c.Issuer); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
		// the exchange below goes to this token endpoint: the pass need not read the metadata again
		for i := range job.rotator.Clients {
			if job.rotator.Clients[i].Name == c.Name {
				job.rotator.Clients[i].TokenURL = md.TokenEndpoint
			}
		}
	}
	verifier := *codeVerifier
	if *code == "" {
		authURL := cmp.Or(*authorizeURL, c.AuthorizeURL)
		if authURL == "" && md != nil {
			if authURL = md.AuthorizationEndpoint; authURL == "" {
				return fmt.Errorf("the metadata of issuer %s names no authorization_endpoint: give --authorize-url or the client's authorize_url", c.Issuer)
			}
			if err := config.CheckURL(authURL); err != nil {
				return fmt.Errorf("authorization_endpoint in the metadata of issuer %s: %w", c.Issuer, err)
			}
		} else if err := config.CheckURL(authURL); err != nil {
			return fmt.Errorf("--authorize-url: %w", err)
		}
		var state string
		verifier, state = oauth.NewVerifier(), oauth.NewState()
		u, err := oauth.AuthorizationURL(authURL, clientID, *redirectURI, cmp.Or(*scope, c.Scope), state, oauth.Challenge(verifier), c.Audience, c.Resources)
		if err != nil {
			return fmt.Errorf("authorize URL: %w", err)
		}
		fmt.Fprintf(stdout, "Have the operator open this URL, sign in and approve:\n\n  %s\n\n", u)
		fmt.Fprint(stdout, "Then paste the code, or the whole URL the browser was sent back to: ")
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && line == "" {
			return fmt.Errorf("no code read: %w", err)
		}
		if *code, err = codeFrom(strings.TrimSpace(line), state); err != nil {
			return err
		}
	}
	if err := storeCode(ctx, job.store, path, *code, *redirectURI, verifier); err != nil {
		return err
	}
	if *storeOnly {
		fmt.Fprintf(stdout, "stored the code for %s in %s: the next pass exchanges it (codes expire after 10 minutes)\n", target, path)
		return nil
	}
	job.rotator.Only, job.rotator.Force = []string{target}, true
	res := job.rotator.Pass(ctx)
	if len(res) == 1 && res[0].Outcome == rotate.ClaimedElsewhere {
		claimedFirst(ctx, job.store, stdout, target, path)
		return errClientsFailed
	}
	if len(res) != 1 || res[0].Outcome != rotate.Rotated {
		for _, r := range res {
			fmt.Fprintf(stdout, "%s: %s: %s\n", r.Client, r.Outcome, notAuthorized(r, path))
		}
		if len(res) == 0 {
			fmt.Fprintf(stdout, "%s: not rotated: the pass found no such target; the code is stored in %s\n", target, path)
		}
		return errClientsFailed
	}
	fmt.Fprintf(stdout, "authorized %s: refresh token stored in %s, access token valid until %s\n",
		target, path, utc(res[0].ExpiresAt))
	return nil
}

// notAuthorized says why authorize's pass did not rotate r and what the operator has now: the
// error when there is one, else what the outcome means for the stored code.
func notAuthorized(r rotate.Result, path string) string {
	switch {
	case r.Err != nil:
		return r.Err.Error()
	case r.Outcome == rotate.RotatedElsewhere:
		return "another process rotated it meanwhile, perhaps with this code; `token-rotator status` shows whether it holds a working token now"
	case r.Outcome == rotate.Deleted:
		return "its secret was deleted meanwhile; nothing was exchanged"
	case r.Outcome == rotate.Skipped:
		return "the pass was cut short (a signal or the pass deadline) before the exchange; the code is stored in " + path + " and the next pass exchanges it within its 10 minutes"
	}
	return "not exchanged; the code is stored in " + path
}

// claimedFirst says what happened when a pass in another process claimed the secret between the
// check before the approval and the exchange, and what to do: the code is stored and that pass's
// write-back keeps it, so the next pass exchanges it, if it comes within the code's 10 minutes.
func claimedFirst(ctx context.Context, s *vault.Store, stdout io.Writer, target, path string) {
	held := "and has finished since"
	again := "or run authorize again"
	if cur, err := s.Read(ctx, path); err == nil {
		if holder, until, ok := rotate.ClaimOn(cur.Data, time.Now()); ok {
			held = fmt.Sprintf("and is rotating it right now (claimed by %s until %s)", holder, utc(until))
			again = fmt.Sprintf("or run authorize again in a minute, once that pass has finished (%s at the latest)", utc(until))
		}
	}
	fmt.Fprintf(stdout, "%s: a pass claimed it first %s: the code is stored in %s but was not exchanged. The next pass exchanges it if it comes within the code's 10 minutes; %s\n",
		target, held, path, again)
}

// utc is how authorize prints a time: UTC, RFC 3339, to the second.
func utc(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// authorizeTarget names the target and secret path a new authorization goes to.
func authorizeTarget(c *config.Client, connection string) (name, path string, err error) {
	switch {
	case c.Grant != config.GrantAuthorizationCode:
		return "", "", fmt.Errorf("client %s uses %s; only authorization_code clients are authorized", c.Name, c.Grant)
	case c.Connections != "" && connection == "":
		return "", "", fmt.Errorf("client %s has connections: name one with --connection", c.Name)
	case c.Connections == "" && connection != "":
		return "", "", fmt.Errorf("client %s has no connections prefix", c.Name)
	case connection != "":
		connection = strings.Trim(connection, "/")
		if connection == "" || strings.Contains(connection, "..") {
			return "", "", fmt.Errorf("--connection %q is not a path under %s", connection, c.Connections)
		}
		return c.Name + "/" + connection, c.Connections + "/" + connection, nil
	}
	return c.Name, c.Secret, nil
}

// codeFrom takes the code from what was pasted: the code itself, or the redirect URL carrying it
// (whose state must be ours, RFC 6749 §10.12).
func codeFrom(pasted, state string) (string, error) {
	if pasted == "" {
		return "", errors.New("no code given")
	}
	u, err := url.Parse(pasted)
	if err != nil || u.Scheme == "" {
		return pasted, nil
	}
	q := u.Query()
	if e := q.Get("error"); e != "" {
		return "", fmt.Errorf("the authorization was refused: %s", e)
	}
	if q.Get("state") != state {
		return "", errors.New("the state in the URL is not the one sent: start again")
	}
	if q.Get("code") == "" {
		return "", errors.New("the URL has no code")
	}
	return q.Get("code"), nil
}

// storeCode writes code, redirect_uri and code_verifier into the secret at path, keeping its
// other keys (check-and-set on the version read).
func storeCode(ctx context.Context, s *vault.Store, path, code, redirectURI, verifier string) error {
	data, version := map[string]any{}, 0
	cur, err := s.Read(ctx, path)
	var deleted *vault.DeletedError
	switch {
	case err == nil:
		data, version = cur.Data, cur.Version
	case errors.As(err, &deleted):
		version = deleted.Version
	case !errors.Is(err, vault.ErrNotFound):
		return err
	}
	data["code"], data["redirect_uri"] = code, redirectURI
	delete(data, "code_verifier")
	if verifier != "" {
		data["code_verifier"] = verifier
	}
	_, err = s.Write(ctx, path, data, version)
	return err
}
